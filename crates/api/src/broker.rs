//! `/api/v1` routes about the broker itself: overview, clients, retained messages, publish.

use crate::{ApiError, ApiState};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thingmq_codec::QoS;
use thingmq_server::admin::{
    AdminError, ClientSummary, PublishRequest, RetainedInfo, SubscriptionListing,
};

/// Largest page a client may ask for.
const MAX_PER_PAGE: usize = 1000;

/// One page of a list.
#[derive(Debug, Serialize)]
pub(crate) struct Page<T> {
    items: Vec<T>,
    total: usize,
    page: usize,
    per_page: usize,
}

/// The page `?page=&per_page=` asks for (pages count from 1; defaults 1 and 50) out of
/// `all`, which is counted whole for `total`. Each list's query struct has its own `page`
/// and `per_page` fields rather than a `#[serde(flatten)]`ed paging struct: flattening makes
/// the query parser see numbers as strings.
fn paginate<T>(
    all: impl IntoIterator<Item = T>,
    page: Option<usize>,
    per_page: Option<usize>,
) -> Result<Page<T>, ApiError> {
    let page = page.unwrap_or(1);
    let per_page = per_page.unwrap_or(50);
    if page == 0 {
        return Err(ApiError::invalid("page", "pages count from 1"));
    }
    if per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(ApiError::invalid(
            "per_page",
            format!("must be between 1 and {MAX_PER_PAGE}"),
        ));
    }
    let skip = (page - 1).saturating_mul(per_page);
    let mut items = Vec::new();
    let mut total = 0;
    for item in all {
        if total >= skip && items.len() < per_page {
            items.push(item);
        }
        total += 1;
    }
    Ok(Page {
        items,
        total,
        page,
        per_page,
    })
}

/// A "containing this text" filter (`?q=`, `?client_id=`): true when there is none.
fn contains_text(field: &str, wanted: Option<&str>) -> bool {
    wanted.is_none_or(|w| field.contains(w))
}

/// `axum::extract::Query` whose rejection is a JSON `invalid_input` error naming the
/// parameter (serde's message does), like every other error of the API.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::invalid("query", detail)
            })
    }
}

fn busy(e: AdminError) -> ApiError {
    ApiError::unavailable(e)
}

/// Broker overview: version, uptime, connections, subscriptions, retained count, counters.
#[utoipa::path(get, path = "/api/v1/overview", tag = "broker",
    responses((status = 200, description = "The overview", body = Object)))]
pub(crate) async fn overview(State(state): State<ApiState>) -> impl IntoResponse {
    Json(state.admin.overview())
}

/// Filters of the client list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ClientFilter {
    /// Only connected (`true`) or only offline (`false`) sessions.
    connected: Option<bool>,
    /// Client ids containing this text.
    q: Option<String>,
    /// Exact username.
    username: Option<String>,
    /// Page number, from 1.
    page: Option<usize>,
    /// Items per page (1 to 1000, default 50).
    per_page: Option<usize>,
}

/// Client sessions, connected and offline, filtered and paged.
#[utoipa::path(get, path = "/api/v1/clients", tag = "broker", params(ClientFilter),
    responses(
        (status = 200, description = "`{items, total, page, per_page}`; each item a client summary", body = Object),
        (status = 400, description = "Bad paging", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn clients(
    State(state): State<ApiState>,
    Query(f): Query<ClientFilter>,
) -> Result<Json<Page<ClientSummary>>, ApiError> {
    let list = state
        .admin
        .clients()
        .into_iter()
        .filter(|c| f.connected.is_none_or(|want| c.connected == want))
        .filter(|c| contains_text(&c.client_id, f.q.as_deref()))
        .filter(|c| {
            f.username.as_deref().is_none_or(|u| {
                c.connection
                    .as_ref()
                    .and_then(|conn| conn.username.as_deref())
                    == Some(u)
            })
        });
    Ok(Json(paginate(list, f.page, f.per_page)?))
}

/// Filters for the subscription list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubscriptionFilter {
    /// Client ids containing this text.
    client_id: Option<String>,
    /// Filters containing this text.
    q: Option<String>,
    /// Only the subscriptions that match this topic name (who gets a message published
    /// there).
    topic: Option<String>,
    /// Only members of this `$share` group.
    share_group: Option<String>,
    /// Page number, from 1.
    page: Option<usize>,
    /// Items per page (1 to 1000, default 50).
    per_page: Option<usize>,
}

/// Every subscription of every session, filtered and paged.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "broker", params(SubscriptionFilter),
    responses(
        (status = 200, description = "`{items, total, page, per_page}`; each item `{client_id, filter, share_group, qos, no_local, retain_as_published, identifier}`", body = Object),
        (status = 400, description = "Bad topic or paging", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn subscriptions(
    State(state): State<ApiState>,
    Query(f): Query<SubscriptionFilter>,
) -> Result<Json<Page<SubscriptionListing>>, ApiError> {
    if let Some(t) = &f.topic {
        thingmq_codec::topic::validate_name(t)
            .map_err(|e| ApiError::invalid("topic", e.to_string()))?;
    }
    let list = state
        .admin
        .subscriptions()
        .into_iter()
        .filter(|s| contains_text(&s.client_id, f.client_id.as_deref()))
        .filter(|s| contains_text(&s.subscription.filter, f.q.as_deref()))
        .filter(|s| {
            f.share_group
                .as_deref()
                .is_none_or(|g| s.subscription.share_group.as_deref() == Some(g))
        })
        .filter(|s| {
            f.topic
                .as_deref()
                .is_none_or(|t| thingmq_codec::topic::matches(&s.subscription.filter, t))
        });
    Ok(Json(paginate(list, f.page, f.per_page)?))
}

/// One client session: connection, subscriptions, queued and in-flight messages.
#[utoipa::path(get, path = "/api/v1/clients/{client_id}", tag = "broker",
    params(("client_id" = String, Path, description = "The MQTT client id")),
    responses(
        (status = 200, description = "The client", body = Object),
        (status = 404, description = "No such session", body = crate::error::ErrorBody),
        (status = 503, description = "The session did not answer in time", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn client(
    State(state): State<ApiState>,
    Path(client_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match state.admin.client(&client_id).await.map_err(busy)? {
        Some(detail) => Ok(Json(detail)),
        None => Err(ApiError::not_found(format!("client {client_id:?}"))),
    }
}

/// Disconnects a connected client.
#[utoipa::path(delete, path = "/api/v1/clients/{client_id}", tag = "broker",
    params(("client_id" = String, Path, description = "The MQTT client id")),
    responses(
        (status = 204, description = "Disconnected"),
        (status = 404, description = "Not connected", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn kick(
    State(state): State<ApiState>,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.admin.kick(&client_id).await.map_err(busy)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "connected client {client_id:?}"
        )))
    }
}

/// `?filter=` (a topic filter, wildcards allowed) and paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RetainedFilter {
    /// A topic filter (`+` and `#` allowed).
    filter: Option<String>,
    /// Page number, from 1.
    page: Option<usize>,
    /// Items per page (1 to 1000, default 50).
    per_page: Option<usize>,
}

/// Retained messages (without payloads), optionally matching a topic filter, paged.
#[utoipa::path(get, path = "/api/v1/retained", tag = "broker", params(RetainedFilter),
    responses(
        (status = 200, description = "`{items, total, page, per_page}`", body = Object),
        (status = 400, description = "Bad filter or paging", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn retained_list(
    State(state): State<ApiState>,
    Query(f): Query<RetainedFilter>,
) -> Result<Json<Page<RetainedInfo>>, ApiError> {
    if let Some(filter) = &f.filter {
        thingmq_codec::topic::validate_filter(filter)
            .map_err(|e| ApiError::invalid("filter", e))?;
    }
    let list = state.admin.retained(f.filter.as_deref());
    Ok(Json(paginate(list, f.page, f.per_page)?))
}

/// A retained message with its payload.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RetainedMessage {
    /// Topic, QoS, size and other metadata.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    info: RetainedInfo,
    /// The payload as text when it is valid UTF-8.
    payload: Option<String>,
    /// The payload, always, in base64.
    payload_base64: String,
}

/// One retained message with its payload.
#[utoipa::path(get, path = "/api/v1/retained/{topic}", tag = "broker",
    params(("topic" = String, Path, description = "The topic; may contain `/`")),
    responses(
        (status = 200, description = "The message", body = RetainedMessage),
        (status = 404, description = "None retained there", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn retained_get(
    State(state): State<ApiState>,
    Path(topic): Path<String>,
) -> Result<Json<RetainedMessage>, ApiError> {
    let info = state
        .admin
        .retained_get(&topic)
        .ok_or_else(|| ApiError::not_found(format!("retained message on {topic:?}")))?;
    Ok(Json(RetainedMessage {
        payload: std::str::from_utf8(&info.payload).ok().map(str::to_owned),
        payload_base64: base64::engine::general_purpose::STANDARD.encode(&info.payload),
        info,
    }))
}

/// Deletes a retained message.
#[utoipa::path(delete, path = "/api/v1/retained/{topic}", tag = "broker",
    params(("topic" = String, Path, description = "The topic; may contain `/`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "None retained there", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn retained_delete(
    State(state): State<ApiState>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.admin.retained_delete(&topic) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "retained message on {topic:?}"
        )))
    }
}

/// `POST /api/v1/publish` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBody {
    /// A topic name (no wildcards).
    topic: String,
    /// The payload, as text or base64 (see `encoding`).
    #[serde(default)]
    payload: String,
    /// `utf8` (default) or `base64`.
    encoding: Option<String>,
    /// 0, 1 or 2.
    #[serde(default)]
    qos: u8,
    /// Keep as the topic's retained message.
    #[serde(default)]
    retain: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Published {
    /// Subscribers the message was routed to.
    subscribers: usize,
}

/// Publishes a message as the broker.
#[utoipa::path(post, path = "/api/v1/publish", tag = "broker",
    request_body(content = PublishBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Routed", body = Published),
        (status = 400, description = "Invalid field", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn publish(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<Published>, ApiError> {
    let body: PublishBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", e))?;
    let payload = match body.encoding.as_deref().unwrap_or("utf8") {
        "utf8" => Bytes::from(body.payload),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(body.payload.as_bytes())
            .map(Bytes::from)
            .map_err(|e| ApiError::invalid("payload", e))?,
        other => {
            return Err(ApiError::invalid(
                "encoding",
                format!("{other:?} is neither \"utf8\" nor \"base64\""),
            ))
        }
    };
    let qos = match body.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        n => return Err(ApiError::invalid("qos", format!("{n} is not 0, 1 or 2"))),
    };
    let subscribers = state
        .admin
        .publish(PublishRequest {
            topic: body.topic,
            payload,
            qos,
            retain: body.retain,
        })
        .map_err(|e| match e {
            AdminError::InvalidTopic(t) => ApiError::invalid(
                "topic",
                format!("{t:?} is not a topic name clients may publish to"),
            ),
            other => busy(other),
        })?;
    Ok(Json(Published { subscribers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_cut_out_of_every_item_counted() {
        let p = paginate(1..=7, Some(2), Some(3)).unwrap();
        assert_eq!(
            (p.items, p.total, p.page, p.per_page),
            (vec![4, 5, 6], 7, 2, 3)
        );
        let p = paginate(1..=7, Some(3), Some(3)).unwrap();
        assert_eq!((p.items, p.total), (vec![7], 7));
        let p = paginate(1..=7, Some(usize::MAX), None).unwrap();
        assert_eq!((p.items, p.total, p.per_page), (vec![], 7, 50));
        assert!(paginate(1..=7, Some(0), None).is_err());
        assert!(paginate(1..=7, None, Some(0)).is_err());
        assert!(paginate(1..=7, None, Some(MAX_PER_PAGE + 1)).is_err());
    }

    #[test]
    fn no_text_filter_matches_everything() {
        assert!(contains_text("client-a", None));
        assert!(contains_text("client-a", Some("")));
        assert!(contains_text("client-a", Some("t-a")));
        assert!(!contains_text("client-a", Some("-b")));
    }
}
