use cache_runtime::invalidates;

#[invalidates("user:{id}", tags = ["org:{org}"])]
async fn move_user(id: u64, org_id: u64) -> Result<(), String> {
    let _ = (id, org_id);
    Ok(())
}

#[invalidates(tags = "org:{org_id}")]
async fn reorganise(org_id: u64) {
    let _ = org_id;
}

fn main() {}
