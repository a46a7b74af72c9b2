//! The MQTT session: one task drives rumqttc's event loop and matches each PUBACK or PUBCOMP
//! to the publish it answers.
//!
//! rumqttc names a publish by its packet id only once it writes it, and writes publishes in
//! the order they were handed over: so each publish handed over queues a waiter, the waiter
//! at the front takes the packet id written next, and the acknowledgement of that id answers
//! it. A publish written again after a reconnect keeps its id (the session is persistent, so
//! the broker keeps its half). When the broker did not keep the session, rumqttc drops what it
//! had not sent: every waiter is told it was lost, and the event loop is started afresh so no
//! stale publish can take a later waiter's place.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use tokio::sync::{oneshot, watch};

use super::errors::{Answer, ack_answer, comp_answer, rec_answer};

/// Requests the client may queue for the event loop: a few batches.
const CHANNEL: usize = 2048;

/// Whether the session reaches the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Link {
    /// Not connected yet.
    Connecting,
    /// Connected, the session in place.
    Up,
    /// Disconnected, with why; the task reconnects.
    Down(String),
}

/// The client's options, of the protocol the broker speaks.
pub(super) enum Options {
    /// MQTT 5.
    V5(Box<v5::MqttOptions>),
    /// MQTT 3.1.1.
    V311(Box<rumqttc::MqttOptions>),
}

/// An event loop's client, of either protocol.
#[derive(Clone)]
pub(super) enum Client {
    V5(v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

impl Client {
    /// Hands one publish to the event loop without waiting (3.1.1 carries no properties).
    pub fn try_publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        body: Vec<u8>,
        properties: PublishProperties,
    ) -> Result<(), String> {
        match self {
            Client::V5(c) => c
                .try_publish_with_properties(topic, qos, retain, body, properties)
                .map_err(|e| e.to_string()),
            Client::V311(c) => {
                let qos = match qos {
                    QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                    QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                    QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
                };
                c.try_publish(topic, qos, retain, body)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The publishes handed over and not yet answered.
#[derive(Default)]
pub(super) struct Waiting {
    /// The current client, while its event loop runs.
    client: Option<Client>,
    /// Handed to the client, not yet written (so without a packet id), in order.
    queued: VecDeque<oneshot::Sender<Answer>>,
    /// Written, by packet id.
    written: HashMap<u16, oneshot::Sender<Answer>>,
    /// A publish rumqttc holds back because its packet id is still in flight.
    collided: Option<(u16, oneshot::Sender<Answer>)>,
}

impl Waiting {
    /// The current client: a publish handed to it while this guard is held, followed by
    /// [`Waiting::queue`], gets its answer through the receiver `queue` returns.
    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// Queues a waiter for the publish just handed to the client.
    pub fn queue(&mut self) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        self.queued.push_back(tx);
        rx
    }

    /// Takes back the waiter queued last (its publish could not be handed over).
    pub fn unqueue(&mut self) {
        self.queued.pop_back();
    }

    /// A publish was written with `pkid`.
    fn written(&mut self, pkid: u16) {
        if self.written.contains_key(&pkid) {
            return; // Written again after a reconnect: the same waiter.
        }
        let waiter = match self.collided.take() {
            Some((id, w)) if id == pkid => Some(w),
            other => {
                self.collided = other;
                self.queued.pop_front()
            }
        };
        if let Some(w) = waiter {
            self.written.insert(pkid, w);
        }
    }

    /// The broker answered for `pkid`.
    fn answer(&mut self, pkid: u16, answer: Answer) {
        if let Some(w) = self.written.remove(&pkid) {
            let _ = w.send(answer);
        }
    }

    /// Whether any publish waits for an answer.
    fn outstanding(&self) -> bool {
        !self.queued.is_empty() || !self.written.is_empty() || self.collided.is_some()
    }

    /// Tells every waiter its publish was lost.
    fn lose_all(&mut self, why: &str) {
        let lost = || Answer::Lost(why.to_string());
        for w in self.queued.drain(..) {
            let _ = w.send(lost());
        }
        for (_, w) in self.written.drain() {
            let _ = w.send(lost());
        }
        if let Some((_, w)) = self.collided.take() {
            let _ = w.send(lost());
        }
    }
}

/// The session's shared half: the waiters, the link's state, and the task driving it.
pub(super) struct Session {
    waiting: Arc<Mutex<Waiting>>,
    link: watch::Receiver<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Starts the task that connects with `options` and keeps the session; `secret` is
    /// scrubbed from the errors it reports.
    pub fn start(sink: &str, options: Options, secret: Option<String>) -> Session {
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let (tx, link) = watch::channel(Link::Connecting);
        let driver = Driver {
            sink: sink.to_string(),
            waiting: waiting.clone(),
            link: tx,
            secret,
            pause: Duration::from_millis(100),
        };
        let task = match options {
            Options::V5(o) => tokio::spawn(drive_v5(driver, *o)),
            Options::V311(o) => tokio::spawn(drive_v311(driver, *o)),
        };
        Session {
            waiting,
            link,
            task,
        }
    }

    /// The waiters, locked.
    pub fn waiting(&self) -> MutexGuard<'_, Waiting> {
        match self.waiting.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The link's state now.
    pub fn link(&self) -> Link {
        self.link.borrow().clone()
    }

    /// Waits until the link is up or down (not connecting), at most `wait`.
    pub async fn settled(&self, wait: Duration) -> Link {
        let mut rx = self.link.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|l| *l != Link::Connecting)).await;
        self.link()
    }
}

/// Locks `waiting` even if a holder panicked.
fn lock(waiting: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    match waiting.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What both protocols' event loops report to the waiters and the link.
struct Driver {
    sink: String,
    waiting: Arc<Mutex<Waiting>>,
    link: watch::Sender<Link>,
    secret: Option<String>,
    pause: Duration,
}

impl Driver {
    /// A new event loop's client takes over.
    fn install(&self, client: Client) {
        lock(&self.waiting).client = Some(client);
    }

    /// The broker's CONNACK; `false` when the event loop must be replaced (the broker lost the
    /// session while publishes were outstanding).
    fn connected(&mut self, session_present: bool) -> bool {
        let mut w = lock(&self.waiting);
        if !session_present && w.outstanding() {
            w.lose_all("the broker did not keep the session; not sent");
            w.client = None;
            drop(w);
            tracing::warn!(sink = %self.sink, "MQTT broker did not keep the session; its unacknowledged messages are sent again");
            return false;
        }
        drop(w);
        self.pause = Duration::from_millis(100);
        tracing::info!(sink = %self.sink, session_present, "MQTT session up");
        self.link.send_replace(Link::Up);
        true
    }

    fn written(&self, pkid: u16) {
        lock(&self.waiting).written(pkid);
    }

    /// rumqttc holds a publish back: its packet id `pkid` is still in flight.
    fn held_back(&self, pkid: u16) {
        let mut w = lock(&self.waiting);
        if let Some(waiter) = w.queued.pop_front() {
            w.collided = Some((pkid, waiter));
        }
    }

    fn answer(&self, pkid: u16, answer: Answer) {
        lock(&self.waiting).answer(pkid, answer);
    }

    /// The link failed: say so once, and pause before the event loop reconnects.
    async fn failed(&mut self, e: impl std::fmt::Display) {
        let why = super::errors::scrub(&e.to_string(), self.secret.as_deref());
        let news = matches!(*self.link.borrow(), Link::Up | Link::Connecting);
        if news {
            tracing::warn!(sink = %self.sink, error = %why, "MQTT connection lost; reconnecting");
        }
        self.link.send_replace(Link::Down(why));
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(5));
    }
}

/// Runs v5 event loops one after another: a new one when the broker lost the session while
/// publishes were outstanding, else the same one, reconnecting with a growing pause.
async fn drive_v5(mut d: Driver, options: v5::MqttOptions) {
    loop {
        let (client, mut events) = v5::AsyncClient::new(options.clone(), CHANNEL);
        d.install(Client::V5(client));
        loop {
            match events.poll().await {
                Ok(v5::Event::Incoming(Packet::ConnAck(ack))) => {
                    if !d.connected(ack.session_present) {
                        break;
                    }
                }
                Ok(v5::Event::Incoming(Packet::PubAck(ack))) => {
                    d.answer(ack.pkid, ack_answer(&ack.reason));
                }
                Ok(v5::Event::Incoming(Packet::PubRec(rec))) => {
                    if let Some(answer) = rec_answer(&rec.reason) {
                        d.answer(rec.pkid, answer);
                    }
                }
                Ok(v5::Event::Incoming(Packet::PubComp(comp))) => {
                    d.answer(comp.pkid, comp_answer(&comp.reason));
                }
                Ok(v5::Event::Incoming(Packet::Disconnect(x))) => {
                    tracing::warn!(sink = %d.sink, reason = ?x.reason_code, "the MQTT broker closed the session");
                }
                Ok(v5::Event::Outgoing(Outgoing::Publish(pkid))) => d.written(pkid),
                Ok(v5::Event::Outgoing(Outgoing::AwaitAck(pkid))) => d.held_back(pkid),
                Ok(_) => {}
                Err(e) => d.failed(e).await,
            }
        }
    }
}

/// The same for MQTT 3.1.1, whose acknowledgements carry no reason code.
async fn drive_v311(mut d: Driver, options: rumqttc::MqttOptions) {
    use rumqttc::{Event as E, Packet as P};
    loop {
        let (client, mut events) = rumqttc::AsyncClient::new(options.clone(), CHANNEL);
        d.install(Client::V311(client));
        loop {
            match events.poll().await {
                Ok(E::Incoming(P::ConnAck(ack))) => {
                    if !d.connected(ack.session_present) {
                        break;
                    }
                }
                Ok(E::Incoming(P::PubAck(ack))) => d.answer(ack.pkid, Answer::Done),
                Ok(E::Incoming(P::PubComp(comp))) => d.answer(comp.pkid, Answer::Done),
                Ok(E::Outgoing(Outgoing::Publish(pkid))) => d.written(pkid),
                Ok(E::Outgoing(Outgoing::AwaitAck(pkid))) => d.held_back(pkid),
                Ok(_) => {}
                Err(e) => d.failed(e).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_take_packet_ids_in_order_and_keep_them_across_a_resend() {
        let mut w = Waiting::default();
        let mut first = w.queue();
        let mut second = w.queue();
        w.written(7);
        w.written(8);
        w.written(7); // resent after a reconnect
        w.answer(8, Answer::Done);
        assert_eq!(second.try_recv().ok(), Some(Answer::Done));
        assert!(first.try_recv().is_err());
        w.answer(7, Answer::NoSubscribers);
        assert_eq!(first.try_recv().ok(), Some(Answer::NoSubscribers));
        assert!(!w.outstanding());
    }

    #[test]
    fn a_held_back_publish_takes_its_id_when_written() {
        let mut w = Waiting::default();
        let mut a = w.queue();
        let mut b = w.queue();
        let mut c = w.queue();
        w.written(1);
        // b collides on id 1 (still in flight); c waits behind it.
        if let Some(waiter) = w.queued.pop_front() {
            w.collided = Some((1, waiter));
        }
        w.answer(1, Answer::Done);
        w.written(1);
        w.written(2);
        w.answer(2, Answer::Done);
        w.answer(1, Answer::Busy("x".into()));
        assert_eq!(a.try_recv().ok(), Some(Answer::Done));
        assert_eq!(b.try_recv().ok(), Some(Answer::Busy("x".into())));
        assert_eq!(c.try_recv().ok(), Some(Answer::Done));
        let mut d = w.queue();
        w.lose_all("gone");
        assert!(matches!(d.try_recv(), Ok(Answer::Lost(_))));
    }
}
