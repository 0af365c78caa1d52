//! Subscribe, publish at each QoS, print what comes back, disconnect.
//!
//! ```sh
//! cargo run --release -- serve &                        # a broker on 127.0.0.1:1883
//! cargo run -p thingmq-client --example pubsub -- 127.0.0.1 1883
//! ```

use thingmq_client::{Client, Event, MqttOptions, QoS, Transport};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.next().map_or(Ok(1883), |p| p.parse())?;

    let (client, mut events) = Client::new(
        MqttOptions::new("example-pubsub"),
        Transport::Tcp { host, port },
    );
    // The event loop must run for calls on the handle to complete.
    let printer = tokio::spawn(async move {
        while let Some(event) = events.poll().await {
            match event {
                Event::Publish(p) => println!(
                    "{} (QoS {}): {}",
                    p.topic,
                    p.qos as u8,
                    String::from_utf8_lossy(&p.payload)
                ),
                Event::Connected {
                    session_present, ..
                } => {
                    println!("connected (session present: {session_present})")
                }
                Event::Disconnected { error } => println!("disconnected: {error:?}"),
                _ => {}
            }
        }
    });

    client.subscribe("example/#", QoS::ExactlyOnce).await?;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        client.publish("example/hello", qos, false, "hello").await?;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    client.disconnect().await?;
    printer.await?;
    Ok(())
}
