use cache_runtime::cached;

#[cached(key = "user:{id}", ttl = 60, tags = ["users", "org:{orgid}"])]
async fn get_user(id: u64, org_id: u64) -> Option<String> {
    Some(format!("{id}/{org_id}"))
}

#[cached(key = "team:{id}", ttl = 60, tags = ["team:{id}{org_id}", "x:{"])]
async fn get_team(id: u64, org_id: u64) -> Option<String> {
    Some(format!("{id}/{org_id}"))
}

fn main() {}
