use cache_runtime::cached;

pub struct Conn;

impl Conn {
    fn load(&self, id: u64) -> u64 {
        id
    }
}

#[cached(key = "a:{id}", ttl = 60, stale = 10)]
async fn by_value(id: u64, conn: Conn) -> u64 {
    conn.load(id)
}

#[cached(key = "b:{id}", ttl = 60, stale = 10)]
async fn by_ref(id: u64, conn: &Conn) -> u64 {
    conn.load(id)
}

pub struct Repo {
    conn: Conn,
}

impl Repo {
    #[cached(key = "c:{id}", ttl = 60, stale = 10)]
    async fn method(&self, id: u64) -> u64 {
        self.conn.load(id)
    }
}

fn main() {}
