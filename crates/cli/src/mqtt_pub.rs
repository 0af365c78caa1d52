//! `thingmq pub`: publish one message (-m, -f, -n, -s) or one per stdin line (-l), with the
//! flags of mosquitto_pub.

use crate::mqtt_conn::{self, ConnArgs};
use anyhow::{bail, Context};
use bytes::Bytes;
use std::io::BufRead;
use std::path::PathBuf;
use thingmq_client::codec::PublishProperties;
use thingmq_client::{Event, Message, QoS};

/// `thingmq pub` flags.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["message", "file", "null_message", "stdin_line", "stdin_file"])))]
pub(crate) struct PubArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic to publish to (or the path of an mqtt:// --url).
    #[arg(short = 't', long)]
    topic: Option<String>,
    /// The message.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Send the contents of a file as the message.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Send an empty message.
    #[arg(short = 'n', long = "null-message")]
    null_message: bool,
    /// Send each line of stdin as a message.
    #[arg(short = 'l', long = "stdin-line")]
    stdin_line: bool,
    /// Send all of stdin as one message.
    #[arg(short = 's', long = "stdin-file")]
    stdin_file: bool,
    /// QoS 0, 1 or 2.
    #[arg(short = 'q', long, default_value = "0", value_parser = mqtt_conn::parse_qos)]
    qos: QoS,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
}

pub(crate) fn run(args: PubArgs) -> anyhow::Result<()> {
    let target = args.conn.target()?;
    let topic = match args.topic.clone().or(target.topic.clone()) {
        Some(t) => t,
        None => bail!("no topic: give -t or a --url with a topic path"),
    };
    thingmq_client::codec::topic::validate_name(&topic)
        .map_err(|e| anyhow::anyhow!("invalid topic {topic:?}: {e}"))?;
    // Read the message before connecting, so an unreadable file costs no connection.
    let single: Option<Bytes> = if let Some(m) = &args.message {
        Some(m.clone().into_bytes().into())
    } else if let Some(f) = &args.file {
        Some(
            std::fs::read(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .into(),
        )
    } else if args.null_message {
        Some(Bytes::new())
    } else if args.stdin_file {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("cannot read stdin")?;
        Some(buf.into())
    } else {
        None
    };
    let options = args
        .conn
        .options(&target, &format!("thingmq-pub-{}", std::process::id()))?;
    let properties = PublishProperties {
        user_properties: args.conn.user_properties(),
        ..PublishProperties::default()
    };
    let message = |payload: Bytes| Message {
        topic: topic.clone(),
        payload,
        qos: args.qos,
        retain: args.retain,
        properties: properties.clone(),
    };
    mqtt_conn::runtime()?.block_on(async {
        let session = mqtt_conn::connect(options, target.transport).await?;
        let client = session.client;
        let mut events = session.events;
        let sent: anyhow::Result<()> = async {
            match single {
                Some(payload) => {
                    client.publish_message(message(payload)).await?;
                }
                None => {
                    // Lines are read on a blocking thread so a slow stdin never stalls keep-alive.
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(16);
                    std::thread::spawn(move || {
                        for line in std::io::stdin().lock().lines() {
                            if tx.blocking_send(line).is_err() {
                                break;
                            }
                        }
                    });
                    while let Some(line) = rx.recv().await {
                        let line = line.context("cannot read stdin")?;
                        client
                            .publish_message(message(line.into_bytes().into()))
                            .await?;
                    }
                }
            }
            client.disconnect().await?;
            Ok(())
        }
        .await;
        // A stopped loop says why in its last event: report that, not just "stopped".
        if let Err(e) = sent {
            while let Ok(event) = events.try_recv() {
                if let Event::Disconnected { error: Some(why) } = event {
                    return Err(anyhow::Error::new(why).context("connection lost"));
                }
            }
            return Err(e);
        }
        Ok(())
    })
}
