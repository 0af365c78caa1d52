//! The topics under `/sys/{productKey}/{deviceName}/` as a typed enum.

use std::fmt;

/// What an Alink topic is for. A `*Reply` variant is the request topic plus `_reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    /// Up: `thing/event/property/post`.
    PropertyPost,
    /// Down: `thing/event/property/post_reply`.
    PropertyPostReply,
    /// Up: `thing/event/property/pack/post` (gateways and batches).
    PackPost,
    /// Down: `thing/event/property/pack/post_reply`.
    PackPostReply,
    /// Up: `thing/event/property/history/post`.
    HistoryPost,
    /// Down: `thing/event/property/history/post_reply`.
    HistoryPostReply,
    /// Down: `thing/service/property/set`.
    PropertySet,
    /// Up: `thing/service/property/set_reply`.
    PropertySetReply,
    /// Down: `thing/service/property/get`.
    PropertyGet,
    /// Up: `thing/service/property/get_reply`.
    PropertyGetReply,
    /// Up: `thing/property/desired/get`.
    DesiredGet,
    /// Down: `thing/property/desired/get_reply`.
    DesiredGetReply,
    /// Up: `thing/property/desired/delete`.
    DesiredDelete,
    /// Down: `thing/property/desired/delete_reply`.
    DesiredDeleteReply,
    /// Up: `thing/event/{event}/post`.
    EventPost(String),
    /// Down: `thing/event/{event}/post_reply`.
    EventPostReply(String),
    /// Down: `thing/service/{service}` (async call).
    ServiceCall(String),
    /// Up: `thing/service/{service}_reply`.
    ServiceReply(String),
    /// Down: `rrpc/request/{messageId}` (sync call).
    RrpcRequest(String),
    /// Up: `rrpc/response/{messageId}`.
    RrpcResponse(String),
    /// Up: `thing/topo/add` (a gateway adds sub-devices, proving it holds their secrets).
    TopoAdd,
    /// Down: `thing/topo/add_reply`.
    TopoAddReply,
    /// Up: `thing/topo/delete`.
    TopoDelete,
    /// Down: `thing/topo/delete_reply`.
    TopoDeleteReply,
    /// Up: `thing/topo/get`.
    TopoGet,
    /// Down: `thing/topo/get_reply`.
    TopoGetReply,
    /// Down: `thing/topo/change` (the platform tells a gateway its topology changed).
    TopoChange,
    /// Up: `thing/topo/change_reply`.
    TopoChangeReply,
    /// Up: `thing/sub/register` (a gateway registers sub-devices dynamically).
    SubRegister,
    /// Down: `thing/sub/register_reply`.
    SubRegisterReply,
}

/// Who publishes on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The device publishes, the platform subscribes.
    Up,
    /// The platform publishes, the device subscribes.
    Down,
}

/// A parsed device topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTopic {
    /// `{productKey}`.
    pub product_key: String,
    /// `{deviceName}`.
    pub device_name: String,
    /// Which function.
    pub kind: TopicKind,
}

/// A topic that is not an Alink device topic (reply code 6203).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic cannot be parsed as an Alink device topic: {0}")]
pub struct TopicError(pub String);

/// Segments that may be a product key, device name, event, service or message id: non-empty,
/// no MQTT wildcards.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains(['+', '#', '/', '\0'])
}

impl DeviceTopic {
    /// Parses `/sys/{productKey}/{deviceName}/…`.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let bad = || TopicError(topic.to_string());
        let rest = topic.strip_prefix("/sys/").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '/');
        let (Some(pk), Some(dn), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if !valid_segment(pk) || !valid_segment(dn) {
            return Err(bad());
        }
        let kind = Self::parse_kind(path).ok_or_else(bad)?;
        Ok(Self {
            product_key: pk.to_string(),
            device_name: dn.to_string(),
            kind,
        })
    }

    fn parse_kind(path: &str) -> Option<TopicKind> {
        use TopicKind as K;
        let fixed = match path {
            "thing/event/property/post" => Some(K::PropertyPost),
            "thing/event/property/post_reply" => Some(K::PropertyPostReply),
            "thing/event/property/pack/post" => Some(K::PackPost),
            "thing/event/property/pack/post_reply" => Some(K::PackPostReply),
            "thing/event/property/history/post" => Some(K::HistoryPost),
            "thing/event/property/history/post_reply" => Some(K::HistoryPostReply),
            "thing/service/property/set" => Some(K::PropertySet),
            "thing/service/property/set_reply" => Some(K::PropertySetReply),
            "thing/service/property/get" => Some(K::PropertyGet),
            "thing/service/property/get_reply" => Some(K::PropertyGetReply),
            "thing/property/desired/get" => Some(K::DesiredGet),
            "thing/property/desired/get_reply" => Some(K::DesiredGetReply),
            "thing/property/desired/delete" => Some(K::DesiredDelete),
            "thing/property/desired/delete_reply" => Some(K::DesiredDeleteReply),
            "thing/topo/add" => Some(K::TopoAdd),
            "thing/topo/add_reply" => Some(K::TopoAddReply),
            "thing/topo/delete" => Some(K::TopoDelete),
            "thing/topo/delete_reply" => Some(K::TopoDeleteReply),
            "thing/topo/get" => Some(K::TopoGet),
            "thing/topo/get_reply" => Some(K::TopoGetReply),
            "thing/topo/change" => Some(K::TopoChange),
            "thing/topo/change_reply" => Some(K::TopoChangeReply),
            "thing/sub/register" => Some(K::SubRegister),
            "thing/sub/register_reply" => Some(K::SubRegisterReply),
            _ => None,
        };
        if fixed.is_some() {
            return fixed;
        }
        let segs: Vec<&str> = path.split('/').collect();
        let id = |s: &str| valid_segment(s).then(|| s.to_string());
        match segs.as_slice() {
            ["thing", "event", ev, "post"] if *ev != "property" => id(ev).map(K::EventPost),
            ["thing", "event", ev, "post_reply"] if *ev != "property" => {
                id(ev).map(K::EventPostReply)
            }
            ["thing", "service", sv] => match sv.strip_suffix("_reply") {
                Some(sv) => id(sv).map(K::ServiceReply),
                None => id(sv).map(K::ServiceCall),
            },
            ["rrpc", "request", msg] => id(msg).map(K::RrpcRequest),
            ["rrpc", "response", msg] => id(msg).map(K::RrpcResponse),
            _ => None,
        }
    }

    /// A topic of `kind` for this device.
    pub fn new(product_key: &str, device_name: &str, kind: TopicKind) -> Self {
        Self {
            product_key: product_key.to_string(),
            device_name: device_name.to_string(),
            kind,
        }
    }

    /// Whether a device publishes this to answer a request of the platform's.
    pub fn is_answer(&self) -> bool {
        use TopicKind as K;
        matches!(
            self.kind,
            K::PropertySetReply | K::PropertyGetReply | K::ServiceReply(_) | K::RrpcResponse(_)
        )
    }

    /// Who publishes on this topic.
    pub fn direction(&self) -> Direction {
        use TopicKind as K;
        match self.kind {
            K::PropertyPost
            | K::PackPost
            | K::HistoryPost
            | K::PropertySetReply
            | K::PropertyGetReply
            | K::DesiredGet
            | K::DesiredDelete
            | K::EventPost(_)
            | K::ServiceReply(_)
            | K::RrpcResponse(_)
            | K::TopoAdd
            | K::TopoDelete
            | K::TopoGet
            | K::TopoChangeReply
            | K::SubRegister => Direction::Up,
            _ => Direction::Down,
        }
    }

    /// The topic the answer to a message on this topic goes to (`None` for replies; an RRPC
    /// request is answered on `rrpc/response/{messageId}`).
    pub fn reply(&self) -> Option<Self> {
        use TopicKind as K;
        let kind = match &self.kind {
            K::PropertyPost => K::PropertyPostReply,
            K::PackPost => K::PackPostReply,
            K::HistoryPost => K::HistoryPostReply,
            K::PropertySet => K::PropertySetReply,
            K::PropertyGet => K::PropertyGetReply,
            K::DesiredGet => K::DesiredGetReply,
            K::DesiredDelete => K::DesiredDeleteReply,
            K::EventPost(e) => K::EventPostReply(e.clone()),
            K::ServiceCall(s) => K::ServiceReply(s.clone()),
            K::RrpcRequest(m) => K::RrpcResponse(m.clone()),
            K::TopoAdd => K::TopoAddReply,
            K::TopoDelete => K::TopoDeleteReply,
            K::TopoGet => K::TopoGetReply,
            K::TopoChange => K::TopoChangeReply,
            K::SubRegister => K::SubRegisterReply,
            _ => return None,
        };
        Some(Self {
            kind,
            ..self.clone()
        })
    }

    /// The Alink `method` of a request on this topic (`None` for replies and RRPC, whose
    /// method names the service inside the payload).
    pub fn method(&self) -> Option<String> {
        use TopicKind as K;
        Some(match &self.kind {
            K::PropertyPost => "thing.event.property.post".into(),
            K::PackPost => "thing.event.property.pack.post".into(),
            K::HistoryPost => "thing.event.property.history.post".into(),
            K::PropertySet => "thing.service.property.set".into(),
            K::PropertyGet => "thing.service.property.get".into(),
            K::DesiredGet => "thing.property.desired.get".into(),
            K::DesiredDelete => "thing.property.desired.delete".into(),
            K::EventPost(e) => format!("thing.event.{e}.post"),
            K::ServiceCall(s) => format!("thing.service.{s}"),
            K::TopoAdd => "thing.topo.add".into(),
            K::TopoDelete => "thing.topo.delete".into(),
            K::TopoGet => "thing.topo.get".into(),
            K::TopoChange => "thing.topo.change".into(),
            K::SubRegister => "thing.sub.register".into(),
            _ => return None,
        })
    }

    /// The prefix every topic of a device starts with: `/sys/{pk}/{dn}/`.
    pub fn device_prefix(product_key: &str, device_name: &str) -> String {
        format!("/sys/{product_key}/{device_name}/")
    }
}

impl fmt::Display for DeviceTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TopicKind as K;
        write!(f, "/sys/{}/{}/", self.product_key, self.device_name)?;
        match &self.kind {
            K::PropertyPost => f.write_str("thing/event/property/post"),
            K::PropertyPostReply => f.write_str("thing/event/property/post_reply"),
            K::PackPost => f.write_str("thing/event/property/pack/post"),
            K::PackPostReply => f.write_str("thing/event/property/pack/post_reply"),
            K::HistoryPost => f.write_str("thing/event/property/history/post"),
            K::HistoryPostReply => f.write_str("thing/event/property/history/post_reply"),
            K::PropertySet => f.write_str("thing/service/property/set"),
            K::PropertySetReply => f.write_str("thing/service/property/set_reply"),
            K::PropertyGet => f.write_str("thing/service/property/get"),
            K::PropertyGetReply => f.write_str("thing/service/property/get_reply"),
            K::DesiredGet => f.write_str("thing/property/desired/get"),
            K::DesiredGetReply => f.write_str("thing/property/desired/get_reply"),
            K::DesiredDelete => f.write_str("thing/property/desired/delete"),
            K::DesiredDeleteReply => f.write_str("thing/property/desired/delete_reply"),
            K::EventPost(e) => write!(f, "thing/event/{e}/post"),
            K::EventPostReply(e) => write!(f, "thing/event/{e}/post_reply"),
            K::ServiceCall(s) => write!(f, "thing/service/{s}"),
            K::ServiceReply(s) => write!(f, "thing/service/{s}_reply"),
            K::RrpcRequest(m) => write!(f, "rrpc/request/{m}"),
            K::RrpcResponse(m) => write!(f, "rrpc/response/{m}"),
            K::TopoAdd => f.write_str("thing/topo/add"),
            K::TopoAddReply => f.write_str("thing/topo/add_reply"),
            K::TopoDelete => f.write_str("thing/topo/delete"),
            K::TopoDeleteReply => f.write_str("thing/topo/delete_reply"),
            K::TopoGet => f.write_str("thing/topo/get"),
            K::TopoGetReply => f.write_str("thing/topo/get_reply"),
            K::TopoChange => f.write_str("thing/topo/change"),
            K::TopoChangeReply => f.write_str("thing/topo/change_reply"),
            K::SubRegister => f.write_str("thing/sub/register"),
            K::SubRegisterReply => f.write_str("thing/sub/register_reply"),
        }
    }
}

/// What a gateway's session topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Up: `combine/login` (a sub-device goes online through its gateway).
    Login,
    /// Down: `combine/login_reply`.
    LoginReply,
    /// Up: `combine/logout`.
    Logout,
    /// Down: `combine/logout_reply`.
    LogoutReply,
    /// Up: `combine/batch_login` (several sub-devices at once, all or none).
    BatchLogin,
    /// Down: `combine/batch_login_reply`.
    BatchLoginReply,
    /// Up: `combine/batch_logout`.
    BatchLogout,
    /// Down: `combine/batch_logout_reply`.
    BatchLogoutReply,
}

/// A gateway's session topic: `/ext/session/{productKey}/{deviceName}/combine/{login|logout|
/// batch_login|batch_logout}` (+ `_reply`), named by the gateway, not by the sub-device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTopic {
    /// The gateway's `{productKey}`.
    pub product_key: String,
    /// The gateway's `{deviceName}`.
    pub device_name: String,
    /// Which function.
    pub kind: SessionKind,
}

impl SessionTopic {
    /// Parses `/ext/session/{pk}/{dn}/combine/…`.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let bad = || TopicError(topic.to_string());
        let rest = topic.strip_prefix("/ext/session/").ok_or_else(bad)?;
        let segs: Vec<&str> = rest.split('/').collect();
        let [pk, dn, "combine", what] = segs.as_slice() else {
            return Err(bad());
        };
        if !valid_segment(pk) || !valid_segment(dn) {
            return Err(bad());
        }
        let kind = match *what {
            "login" => SessionKind::Login,
            "login_reply" => SessionKind::LoginReply,
            "logout" => SessionKind::Logout,
            "logout_reply" => SessionKind::LogoutReply,
            "batch_login" => SessionKind::BatchLogin,
            "batch_login_reply" => SessionKind::BatchLoginReply,
            "batch_logout" => SessionKind::BatchLogout,
            "batch_logout_reply" => SessionKind::BatchLogoutReply,
            _ => return Err(bad()),
        };
        Ok(Self {
            product_key: pk.to_string(),
            device_name: dn.to_string(),
            kind,
        })
    }

    /// The reply topic of a request (`None` for replies).
    pub fn reply(&self) -> Option<Self> {
        let kind = match self.kind {
            SessionKind::Login => SessionKind::LoginReply,
            SessionKind::Logout => SessionKind::LogoutReply,
            SessionKind::BatchLogin => SessionKind::BatchLoginReply,
            SessionKind::BatchLogout => SessionKind::BatchLogoutReply,
            _ => return None,
        };
        Some(Self {
            kind,
            ..self.clone()
        })
    }

    /// The prefix of a gateway's session topics: `/ext/session/{pk}/{dn}/`.
    pub fn prefix(product_key: &str, device_name: &str) -> String {
        format!("/ext/session/{product_key}/{device_name}/")
    }
}

impl fmt::Display for SessionTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            SessionKind::Login => "login",
            SessionKind::LoginReply => "login_reply",
            SessionKind::Logout => "logout",
            SessionKind::LogoutReply => "logout_reply",
            SessionKind::BatchLogin => "batch_login",
            SessionKind::BatchLoginReply => "batch_login_reply",
            SessionKind::BatchLogout => "batch_logout",
            SessionKind::BatchLogoutReply => "batch_logout_reply",
        };
        write!(
            f,
            "{}combine/{what}",
            Self::prefix(&self.product_key, &self.device_name)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TopicKind as K;

    #[test]
    fn every_topic_parses_and_prints_back_unchanged() {
        let cases = [
            ("thing/event/property/post", K::PropertyPost, Direction::Up),
            (
                "thing/event/property/post_reply",
                K::PropertyPostReply,
                Direction::Down,
            ),
            ("thing/event/property/pack/post", K::PackPost, Direction::Up),
            (
                "thing/event/property/pack/post_reply",
                K::PackPostReply,
                Direction::Down,
            ),
            (
                "thing/event/property/history/post",
                K::HistoryPost,
                Direction::Up,
            ),
            (
                "thing/event/property/history/post_reply",
                K::HistoryPostReply,
                Direction::Down,
            ),
            (
                "thing/service/property/set",
                K::PropertySet,
                Direction::Down,
            ),
            (
                "thing/service/property/set_reply",
                K::PropertySetReply,
                Direction::Up,
            ),
            (
                "thing/service/property/get",
                K::PropertyGet,
                Direction::Down,
            ),
            (
                "thing/service/property/get_reply",
                K::PropertyGetReply,
                Direction::Up,
            ),
            ("thing/property/desired/get", K::DesiredGet, Direction::Up),
            (
                "thing/property/desired/get_reply",
                K::DesiredGetReply,
                Direction::Down,
            ),
            (
                "thing/property/desired/delete",
                K::DesiredDelete,
                Direction::Up,
            ),
            (
                "thing/property/desired/delete_reply",
                K::DesiredDeleteReply,
                Direction::Down,
            ),
            (
                "thing/event/overheat/post",
                K::EventPost("overheat".into()),
                Direction::Up,
            ),
            (
                "thing/event/overheat/post_reply",
                K::EventPostReply("overheat".into()),
                Direction::Down,
            ),
            (
                "thing/service/blink",
                K::ServiceCall("blink".into()),
                Direction::Down,
            ),
            (
                "thing/service/blink_reply",
                K::ServiceReply("blink".into()),
                Direction::Up,
            ),
            (
                "rrpc/request/1234",
                K::RrpcRequest("1234".into()),
                Direction::Down,
            ),
            (
                "rrpc/response/1234",
                K::RrpcResponse("1234".into()),
                Direction::Up,
            ),
            ("thing/topo/add", K::TopoAdd, Direction::Up),
            ("thing/topo/add_reply", K::TopoAddReply, Direction::Down),
            ("thing/topo/delete", K::TopoDelete, Direction::Up),
            (
                "thing/topo/delete_reply",
                K::TopoDeleteReply,
                Direction::Down,
            ),
            ("thing/topo/get", K::TopoGet, Direction::Up),
            ("thing/topo/get_reply", K::TopoGetReply, Direction::Down),
            ("thing/topo/change", K::TopoChange, Direction::Down),
            ("thing/topo/change_reply", K::TopoChangeReply, Direction::Up),
            ("thing/sub/register", K::SubRegister, Direction::Up),
            (
                "thing/sub/register_reply",
                K::SubRegisterReply,
                Direction::Down,
            ),
        ];
        for (path, kind, dir) in cases {
            let topic = format!("/sys/a1Pk/lamp-01/{path}");
            let parsed = DeviceTopic::parse(&topic).unwrap();
            assert_eq!(parsed.product_key, "a1Pk");
            assert_eq!(parsed.device_name, "lamp-01");
            assert_eq!(parsed.kind, kind, "{topic}");
            assert_eq!(parsed.direction(), dir, "{topic}");
            assert_eq!(parsed.to_string(), topic);
        }
    }

    #[test]
    fn replies_and_methods() {
        let t = DeviceTopic::parse("/sys/pk/dn/thing/event/property/post").unwrap();
        assert_eq!(t.method().unwrap(), "thing.event.property.post");
        assert_eq!(
            t.reply().unwrap().to_string(),
            "/sys/pk/dn/thing/event/property/post_reply"
        );
        let t = DeviceTopic::parse("/sys/pk/dn/thing/event/alarm/post").unwrap();
        assert_eq!(t.method().unwrap(), "thing.event.alarm.post");
        assert_eq!(
            t.reply().unwrap().to_string(),
            "/sys/pk/dn/thing/event/alarm/post_reply"
        );
        let t = DeviceTopic::parse("/sys/pk/dn/thing/service/reboot").unwrap();
        assert_eq!(t.method().unwrap(), "thing.service.reboot");
        assert_eq!(
            t.reply().unwrap().to_string(),
            "/sys/pk/dn/thing/service/reboot_reply"
        );
        let t = DeviceTopic::parse("/sys/pk/dn/thing/service/property/set").unwrap();
        assert_eq!(t.method().unwrap(), "thing.service.property.set");
        assert_eq!(
            t.reply().unwrap().to_string(),
            "/sys/pk/dn/thing/service/property/set_reply"
        );
        let t = DeviceTopic::parse("/sys/pk/dn/thing/event/property/pack/post").unwrap();
        assert_eq!(t.method().unwrap(), "thing.event.property.pack.post");
        let t = DeviceTopic::parse("/sys/pk/dn/rrpc/request/99").unwrap();
        assert_eq!(
            t.reply().unwrap().to_string(),
            "/sys/pk/dn/rrpc/response/99"
        );
        assert!(t.reply().unwrap().reply().is_none());
        assert!(DeviceTopic::parse("/sys/pk/dn/thing/service/reboot_reply")
            .unwrap()
            .reply()
            .is_none());
    }

    #[test]
    fn non_alink_topics_are_refused() {
        for t in [
            "sys/pk/dn/thing/event/property/post",
            "/sys/pk/thing/event/property/post",
            "/sys/pk/dn/",
            "/sys//dn/thing/event/property/post",
            "/sys/+/dn/thing/event/property/post",
            "/sys/pk/#/thing/event/property/post",
            "/sys/pk/dn/thing/event/property/put",
            "/sys/pk/dn/thing/event/a/b/post",
            "/sys/pk/dn/thing/service/a/b",
            "/sys/pk/dn/thing/service/",
            "/sys/pk/dn/rrpc/request/",
            "/sys/pk/dn/rrpc/request/1/2",
            "/ext/pk/dn/thing/event/property/post",
        ] {
            assert!(DeviceTopic::parse(t).is_err(), "{t}");
        }
    }

    #[test]
    fn gateway_session_topics_parse_and_print_back() {
        for (what, kind) in [
            ("login", SessionKind::Login),
            ("login_reply", SessionKind::LoginReply),
            ("logout", SessionKind::Logout),
            ("logout_reply", SessionKind::LogoutReply),
            ("batch_login", SessionKind::BatchLogin),
            ("batch_login_reply", SessionKind::BatchLoginReply),
            ("batch_logout", SessionKind::BatchLogout),
            ("batch_logout_reply", SessionKind::BatchLogoutReply),
        ] {
            let topic = format!("/ext/session/gwPk/gw-1/combine/{what}");
            let t = SessionTopic::parse(&topic).unwrap();
            assert_eq!(
                (t.product_key.as_str(), t.device_name.as_str(), t.kind),
                ("gwPk", "gw-1", kind)
            );
            assert_eq!(t.to_string(), topic);
        }
        let login = SessionTopic::parse("/ext/session/p/d/combine/login").unwrap();
        assert_eq!(
            login.reply().unwrap().to_string(),
            "/ext/session/p/d/combine/login_reply"
        );
        let batch = SessionTopic::parse("/ext/session/p/d/combine/batch_logout").unwrap();
        assert_eq!(
            batch.reply().unwrap().to_string(),
            "/ext/session/p/d/combine/batch_logout_reply"
        );
        assert!(batch.reply().unwrap().reply().is_none());
        for bad in [
            "/ext/session/p/d/combine/batch",
            "/ext/session/+/d/combine/login",
            "/ext/session/p/d/login",
            "/sys/p/d/combine/login",
        ] {
            assert!(SessionTopic::parse(bad).is_err(), "{bad}");
        }
    }
}
