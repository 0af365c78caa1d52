//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "thingmq API", description = "REST API of the thingmq broker and console. Errors are `{code, message}`."),
    paths(
        crate::auth::login, crate::auth::logout, crate::auth::me,
        crate::broker::overview, crate::broker::clients, crate::broker::subscriptions, crate::broker::client, crate::broker::kick,
        crate::broker::retained_list, crate::broker::retained_get, crate::broker::retained_delete,
        crate::broker::publish, crate::console::endpoints, crate::metrics::prometheus, openapi_json,
        crate::things::products, crate::things::create_product, crate::things::product,
        crate::things::put_product, crate::things::delete_product, crate::things::create_device,
        crate::things::devices, crate::things::device, crate::things::patch_device,
        crate::things::delete_device, crate::things::credentials, crate::things::reset_secret, crate::things::shadow,
        crate::things::set_properties, crate::things::get_properties, crate::things::property_history, crate::things::call_service,
        crate::things::call_state, crate::things::events, crate::things::log,
    ),
    modifiers(&Security),
    security(("api_key" = []), ("session" = [])),
)]
pub(crate) struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "Set by POST /api/v1/login; state-changing requests also need an X-Requested-With header",
            ))),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
