//! History queries: reads straight from the database, nothing in memory. Kept apart because
//! they share nothing with the live state but the store, and an API caller looking for what
//! was reported, raised or called in the past should find it in one place.

use super::{Platform, PlatformError};
use crate::store::{Bucket, PropertyPoint, ServiceCallRecord, StatusChange, StoredEvent};

impl Platform {
    /// Values of one property in `[from_ms, to_ms)`, oldest first, at most `limit`.
    pub async fn property_history(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<PropertyPoint>, PlatformError> {
        Ok(self
            .inner
            .store
            .property_history(
                product_key,
                device_name,
                identifier,
                from_ms,
                to_ms,
                i64::from(limit),
            )
            .await?)
    }

    /// Numeric values of one property downsampled into buckets of `bucket_ms`.
    pub async fn property_buckets(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<Bucket>, PlatformError> {
        Ok(self
            .inner
            .store
            .property_buckets(
                product_key,
                device_name,
                identifier,
                from_ms,
                to_ms,
                bucket_ms,
            )
            .await?)
    }

    /// Events in `[from_ms, to_ms)`, of one type (`info`/`alert`/`error`) or all.
    pub async fn events(
        &self,
        product_key: &str,
        device_name: &str,
        event_type: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, PlatformError> {
        Ok(self
            .inner
            .store
            .events(
                product_key,
                device_name,
                event_type,
                from_ms,
                to_ms,
                i64::from(limit),
            )
            .await?)
    }

    /// Online/offline changes in `[from_ms, to_ms)`.
    pub async fn status_changes(
        &self,
        product_key: &str,
        device_name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StatusChange>, PlatformError> {
        Ok(self
            .inner
            .store
            .status_changes(product_key, device_name, from_ms, to_ms)
            .await?)
    }

    /// Service calls started in `[from_ms, to_ms)`.
    pub async fn service_calls(
        &self,
        product_key: &str,
        device_name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ServiceCallRecord>, PlatformError> {
        Ok(self
            .inner
            .store
            .service_calls(product_key, device_name, from_ms, to_ms)
            .await?)
    }
}
