//! The embedded (in-process) store for one machine: one watch channel per node. The values
//! are plain data, the same the etcd store carries as JSON.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

use crate::state::NodeState;

pub type Watch = watch::Receiver<Option<Arc<NodeState>>>;

#[derive(Default)]
pub struct EmbeddedStore {
    nodes: Mutex<BTreeMap<String, watch::Sender<Option<Arc<NodeState>>>>>,
}

impl EmbeddedStore {
    fn sender(&self, node: &str) -> watch::Sender<Option<Arc<NodeState>>> {
        let mut nodes = self.nodes.lock().expect("store lock poisoned");
        nodes.entry(node.to_string()).or_insert_with(|| watch::channel(None).0).clone()
    }

    /// Publishes `state` for its node. Returns false (and wakes nobody) when the node already
    /// has an equal state apart from the generation.
    pub fn publish(&self, state: NodeState) -> bool {
        let tx = self.sender(&state.node);
        tx.send_if_modified(|current| {
            let same = current.as_ref().is_some_and(|c| {
                NodeState { generation: state.generation, ..(**c).clone() } == state
            });
            if !same {
                *current = Some(Arc::new(state));
            }
            !same
        })
    }

    /// Generation of the state the store holds for `node`: the last one that changed it.
    pub fn generation(&self, node: &str) -> Option<u64> {
        self.sender(node).borrow().as_ref().map(|s| s.generation)
    }

    /// A receiver for one node's desired state (`None` until the first publish).
    pub fn watch(&self, node: &str) -> Watch {
        self.sender(node).subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_an_equal_state_wakes_nobody() {
        let store = EmbeddedStore::default();
        let mut rx = store.watch("gw");
        assert!(store.publish(NodeState {
            node: "gw".into(),
            generation: 1,
            ..Default::default()
        }));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(!store.publish(NodeState {
            node: "gw".into(),
            generation: 2,
            ..Default::default()
        }));
        assert!(!rx.has_changed().unwrap());
    }
}
