use cache_runtime::invalidates;

#[invalidates(key = "user:{id}")]
async fn rename_user(id: u64, name: &str) -> Result<(), String> {
    let _ = (id, name);
    Ok(())
}

fn main() {}
