use cache_runtime::cached;

type Maybe<T> = Option<T>;

#[cached(key = "user:{id}", ttl = 60, returns = "optional")]
async fn get_user(id: u64) -> Maybe<u64> {
    Some(id)
}

fn main() {}
