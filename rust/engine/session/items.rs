//! Conversation edits: items added, deleted and truncated by the client.

use std::sync::Arc;

use super::error::SessionError;
use super::handle::Session;
use super::jobs::SttJob;
use super::state::{SttPurpose, lock};
use crate::engine::backend::Cancel;
use crate::engine::conversation::{Content, Item, ItemKind};
use crate::engine::events::{EngineEvent, StopReason};
use crate::engine::input::STT_RATE;
use crate::engine::models::Stage;

impl Session {
    /// Add an item (`conversation.item.create`); returns the previous item id.
    pub fn add_item(&self, item: Item, previous: Option<&str>) -> Result<(), SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        let prev = st.conversation.insert(item.clone(), previous)?;
        sh.out.emit(EngineEvent::ItemAdded {
            item: item.clone(),
            previous_item_id: prev.clone(),
        });
        sh.out.emit(EngineEvent::ItemDone {
            item,
            previous_item_id: prev,
        });
        Ok(())
    }

    /// Add a user audio item (`conversation.item.create` with audio) and
    /// transcribe it; a `response.create` meanwhile waits for the transcript.
    pub fn add_audio_item(
        &self,
        mut item: Item,
        previous: Option<&str>,
        audio_16k: Vec<f32>,
    ) -> Result<(), SessionError> {
        let sh = &self.0;
        let duration_ms = audio_16k.len() as f64 * 1000.0 / f64::from(STT_RATE);
        if let ItemKind::Message { content, .. } = &mut item.kind {
            for c in content.iter_mut() {
                if let Content::InputAudio { duration_ms: d, .. } = c {
                    *d = duration_ms;
                }
            }
        }
        let mut st = lock(&sh.state);
        let prev = st.conversation.insert(item.clone(), previous)?;
        let item_id = item.id.clone();
        sh.out.emit(EngineEvent::ItemAdded {
            item: item.clone(),
            previous_item_id: prev.clone(),
        });
        sh.out.emit(EngineEvent::ItemDone {
            item,
            previous_item_id: prev,
        });
        let job = SttJob {
            session: Arc::clone(sh),
            audio: audio_16k,
            options: st.config.stt.clone(),
            purpose: SttPurpose::Committed {
                item_id,
                duration_ms,
                respond: false,
            },
            cancel: Cancel::never(),
        };
        sh.engine.submit(Stage::Stt, Box::new(job))?;
        st.pending_stt += 1;
        Ok(())
    }

    /// Remove an item.
    pub fn delete_item(&self, id: &str) -> Result<(), SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        st.conversation.delete(id)?;
        sh.out.emit(EngineEvent::ItemDeleted {
            item_id: id.to_owned(),
        });
        Ok(())
    }

    /// Trim an assistant item to the audio the client played.
    pub fn truncate_item(
        &self,
        id: &str,
        content_index: usize,
        audio_end_ms: u64,
    ) -> Result<(), SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        // Truncating the item still being spoken stops the response first.
        if st
            .response
            .as_ref()
            .is_some_and(|r| r.message.as_ref().is_some_and(|(m, _)| m == id))
        {
            sh.cancel_response(&mut st, StopReason::ClientCancelled);
        }
        st.conversation.truncate(id, content_index, audio_end_ms)?;
        sh.out.emit(EngineEvent::ItemTruncated {
            item_id: id.to_owned(),
            content_index,
            audio_end_ms,
        });
        Ok(())
    }
}
