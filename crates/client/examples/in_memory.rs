//! A client and a broker in one process, joined by an in-memory pipe instead of a socket — the
//! way an embedded component (the device layer) talks to the broker. Here the pipe is bridged
//! to a TCP broker by a copy task, since the broker's in-process link is not public API yet.
//!
//! ```sh
//! cargo run --release -- serve &
//! cargo run -p thingmq-client --example in_memory
//! ```

use thingmq_client::{Client, Event, MqttOptions, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (client_end, mut broker_end) = tokio::io::duplex(64 * 1024);
    let mut tcp = tokio::net::TcpStream::connect("127.0.0.1:1883").await?;
    tokio::spawn(async move { tokio::io::copy_bidirectional(&mut broker_end, &mut tcp).await });

    let (client, mut events) = Client::with_stream(MqttOptions::new("in-memory"), client_end);
    let driver = tokio::spawn(async move {
        while let Some(event) = events.poll().await {
            if let Event::Publish(p) = event {
                println!("{}: {}", p.topic, String::from_utf8_lossy(&p.payload));
            }
        }
    });
    client.subscribe("pipe/#", QoS::AtLeastOnce).await?;
    client
        .publish("pipe/a", QoS::AtLeastOnce, false, "through a duplex")
        .await?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    client.disconnect().await?;
    driver.await?;
    Ok(())
}
