//! What a room looks like to a reader: its messages in a stable order with edits, deletes,
//! reactions and nicknames applied. Built only from the set of records, so every peer holding the
//! same records shows the same thing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::clock::Hlc;
use crate::identity::PublicKey;
use crate::record::{Body, IndexedRecord, RecordId};

/// A room as people see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomView {
    /// Messages by `sent_at`, ties broken by record id.
    pub messages: Vec<MessageView>,
    /// Each author's latest nickname in this room.
    pub nicknames: BTreeMap<PublicKey, String>,
}

/// One message with everything that acts on it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    /// The message record's id.
    pub id: RecordId,
    /// Who wrote it.
    pub author: PublicKey,
    /// When it was written.
    pub sent_at: Hlc,
    /// The current text: the latest edit by the author, or empty once deleted.
    pub text: String,
    /// When the text shown was last edited, if it was.
    pub edited_at: Option<Hlc>,
    /// Whether the author deleted it.
    pub deleted: bool,
    /// Each reaction with the people who currently hold it.
    pub reactions: BTreeMap<String, BTreeSet<PublicKey>>,
}

impl RoomView {
    /// The nickname `author` chose, if any.
    pub fn nickname(&self, author: &PublicKey) -> Option<&str> {
        self.nicknames.get(author).map(String::as_str)
    }

    /// Applies the rules to a set of records (order does not matter; the latest by
    /// `(sent_at, id)` wins wherever two records compete).
    pub(crate) fn build<'a>(records: impl IntoIterator<Item = &'a IndexedRecord>) -> Self {
        let mut records: Vec<&IndexedRecord> = records.into_iter().collect();
        records.sort_by_key(|r| (r.sent_at, r.id));

        let mut messages: Vec<MessageView> = Vec::new();
        let mut position: HashMap<RecordId, usize> = HashMap::new();
        let mut nicknames = BTreeMap::new();
        let mut reactions: BTreeMap<(RecordId, String, PublicKey), bool> = BTreeMap::new();
        for record in &records {
            if let Body::Message { text } = &record.body {
                position.insert(record.id, messages.len());
                messages.push(MessageView {
                    id: record.id,
                    author: record.author,
                    sent_at: record.sent_at,
                    text: text.clone(),
                    edited_at: None,
                    deleted: false,
                    reactions: BTreeMap::new(),
                });
            }
        }
        // Sorted ascending, so later records overwrite earlier ones: latest wins.
        for record in &records {
            let target = record.body.target().and_then(|t| position.get(&t).copied());
            match (&record.body, target) {
                (Body::Profile { nickname }, _) => {
                    nicknames.insert(record.author, nickname.clone());
                }
                (Body::Edit { text, .. }, Some(i)) if messages[i].author == record.author => {
                    messages[i].text.clone_from(text);
                    messages[i].edited_at = Some(record.sent_at);
                }
                (
                    Body::Reaction {
                        target,
                        on,
                        reaction,
                    },
                    Some(_),
                ) => {
                    reactions.insert((*target, reaction.clone(), record.author), *on);
                }
                _ => {}
            }
        }
        // Deletes win over edits whatever their timestamps.
        for record in &records {
            let Body::Delete { target } = &record.body else {
                continue;
            };
            if let Some(&i) = position.get(target)
                && messages[i].author == record.author
            {
                messages[i].deleted = true;
                messages[i].text.clear();
            }
        }
        for ((target, reaction, author), on) in reactions {
            if let (true, Some(&i)) = (on, position.get(&target)) {
                messages[i]
                    .reactions
                    .entry(reaction)
                    .or_default()
                    .insert(author);
            }
        }
        Self {
            messages,
            nicknames,
        }
    }
}
