use pullsecret_injector::cli::{parse, run};

#[tokio::main]
async fn main() {
    let cli = parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
