//! The `jwt` auth method (being written).

use std::sync::Arc;

use async_trait::async_trait;
use leash_backend::{Backend, BackendRequest, CoreError, MountEntry, Response};
use leash_storage::Storage;
use leash_types::Clock;

struct Stub;

#[async_trait]
impl Backend for Stub {
    async fn handle(&self, _req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        Err(CoreError::UnsupportedOperation)
    }
}

/// The `jwt` auth method for `mount`.
pub fn new_backend(
    _mount: &MountEntry,
    _storage: Arc<dyn Storage>,
    _clock: Arc<dyn Clock>,
) -> Arc<dyn Backend> {
    Arc::new(Stub)
}
