use cache_runtime::invalidates;

#[invalidates("user:{id}", "user_by_name:{nmae}")]
async fn rename_user(id: u64, name: &str) -> Result<(), String> {
    let _ = (id, name);
    Ok(())
}

fn main() {}
