//! Prints a bucket's metadata log, one record per line: `cargo run -p weir-controller --example
//! dump_meta -- /path/to/bucket/meta/log`.
fn main() {
    let dir = std::env::args().nth(1).expect("a meta/log directory");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("readable")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let bytes = std::fs::read(&path).expect("readable");
        let key = path.display().to_string();
        match weir_controller::log::decode(&bytes, &key) {
            Ok(records) => {
                for r in records {
                    println!(
                        "{} {:?}",
                        path.file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default(),
                        r.kind
                    );
                }
            }
            Err(e) => println!("{key}: {e}"),
        }
    }
}
