//! Services as Docker containers (testcontainers), for `--stack docker` and for `auto` where
//! the programs are missing and a daemon answers. The images are the ones docker-compose.yml
//! names (a test holds the two together).

#[cfg(feature = "docker")]
use std::time::Instant;

#[cfg(feature = "docker")]
use super::say;
use super::{Origin, Service, Stack, StackError};

/// The images `--stack docker` starts: Apache Kafka as `scripts/kafka/pom.xml` fetches it,
/// Redis and PostgreSQL as Debian 12 packages them.
pub const KAFKA_IMAGE: (&str, &str) = ("apache/kafka", "4.1.1");
pub const REDIS_IMAGE: (&str, &str) = ("redis", "7.0");
pub const POSTGRES_IMAGE: (&str, &str) = ("postgres", "15");

#[cfg(not(feature = "docker"))]
pub(super) async fn start(stack: &mut Stack, service: Service) -> Result<Origin, StackError> {
    Err(StackError::Docker(format!(
        "cannot start {}: this build has no Docker support; build with the cargo feature `docker` (on by default)",
        service.name()
    )))
}

#[cfg(feature = "docker")]
pub(super) async fn start(stack: &mut Stack, service: Service) -> Result<Origin, StackError> {
    use testcontainers_modules::testcontainers::ImageExt;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::{kafka, postgres, redis};
    let started = Instant::now();
    let docker = |e: testcontainers_modules::testcontainers::TestcontainersError| {
        StackError::Docker(format!("cannot start {}: {e}", service.name()))
    };
    let host_port = |e: testcontainers_modules::testcontainers::TestcontainersError| {
        StackError::Docker(format!("{}: no mapped port: {e}", service.name()))
    };
    match service {
        Service::Redis => {
            let container = redis::Redis::default()
                .with_tag(REDIS_IMAGE.1)
                .start()
                .await
                .map_err(docker)?;
            let port = container
                .get_host_port_ipv4(redis::REDIS_PORT)
                .await
                .map_err(host_port)?;
            stack.connections.redis_url = format!("redis:\u{2f}/127.0.0.1:{port}");
            stack.containers.push(Box::new(container));
        }
        Service::Postgres => {
            let mut url = url::Url::parse(&stack.connections.postgres_url)
                .map_err(|e| StackError::Docker(format!("the Postgres URL does not parse: {e}")))?;
            let container = postgres::Postgres::default()
                .with_user(url.username())
                .with_password(url.password().unwrap_or(""))
                .with_db_name(url.path().trim_start_matches('/'))
                .with_tag(POSTGRES_IMAGE.1)
                .start()
                .await
                .map_err(docker)?;
            let port = container
                .get_host_port_ipv4(5432)
                .await
                .map_err(host_port)?;
            url.set_host(Some("127.0.0.1")).expect("valid host");
            url.set_port(Some(port)).expect("a postgres URL has a host");
            stack.connections.postgres_url = url.to_string();
            stack.containers.push(Box::new(container));
        }
        Service::Kafka => {
            let container = kafka::apache::Kafka::default()
                .with_jvm_image()
                .with_tag(KAFKA_IMAGE.1)
                .start()
                .await
                .map_err(docker)?;
            let port = container
                .get_host_port_ipv4(kafka::apache::KAFKA_PORT)
                .await
                .map_err(host_port)?;
            stack.connections.kafka_brokers = format!("127.0.0.1:{port}");
            stack.info.kafka_version = Some(KAFKA_IMAGE.1.to_string());
            stack.containers.push(Box::new(container));
        }
    }
    say(
        stack.quiet,
        &format!(
            "{:<8} started as a Docker container in {:.1} s",
            service.name(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(Origin::Docker)
}
