use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use lifecycle::config::ProcessEnv;
use model_deployer::{Config, Deployer, FUNCTION, handle};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lifecycle::telemetry::init_logs();
    lifecycle::metrics::init(FUNCTION);
    // An invalid configuration fails the cold start, naming the variable.
    let config = Config::from_source(&ProcessEnv)?;
    let clients = lifecycle::aws::Clients::new(&lifecycle::aws::load(FUNCTION).await);
    let deployer = Deployer::new(clients, config);
    run(service_fn(|event: LambdaEvent<Value>| {
        handle(&deployer, event)
    }))
    .await
}
