//! The controller's API on a node: run applications, free held qubits, report
//! status, shut down. Only a connection whose certificate is the controller's gets
//! here.

use std::sync::Arc;

use qnet_common::wire::{
    FrameReader, FrameWriter, NodeRequest, NodeRequestBody, NodeResponse, NodeResponseBody,
    RequestBody, Role, WireError,
};

use crate::Node;

/// Serves one controller connection until it closes. A stream that breaks the
/// protocol closes the connection with the matching error code and the reason.
pub async fn serve(node: Arc<Node>, conn: quinn::Connection) -> anyhow::Result<()> {
    let result = serve_inner(node, &conn).await;
    if let Err(e) = &result
        && let Some(wire) = e.downcast_ref::<WireError>()
    {
        conn.close(wire.close_code().into(), wire.to_string().as_bytes());
    }
    result
}

async fn serve_inner(node: Arc<Node>, conn: &quinn::Connection) -> anyhow::Result<()> {
    let (send, recv) = conn.accept_bi().await?;
    let mut reader = FrameReader::new(recv);
    let mut writer = FrameWriter::new(send);
    let hello = reader.read_hello().await?;
    if hello.role != Role::Controller {
        return Err(
            WireError::UnexpectedMessage("a hello whose role is not the certificate's").into(),
        );
    }
    writer.write_hello(Role::Node(node.name.clone())).await?;
    while let Some(request) = reader.read::<NodeRequest>().await? {
        let shutdown = matches!(request.body, NodeRequestBody::Shutdown);
        let body = handle(&node, request.body)
            .await
            .map_err(|e| format!("{e:#}"));
        writer
            .write(&NodeResponse {
                id: request.id,
                body,
            })
            .await?;
        if shutdown {
            let _ = node.stop.send(true);
        }
    }
    Ok(())
}

async fn handle(node: &Arc<Node>, body: NodeRequestBody) -> anyhow::Result<NodeResponseBody> {
    match body {
        NodeRequestBody::RunEpr { peer, pairs, basis } => node.run_epr(&peer, pairs, basis).await,
        NodeRequestBody::RunTeleport { peer, state, shots } => {
            node.run_teleport(&peer, state, shots).await
        }
        NodeRequestBody::Free { qubits } => {
            {
                let held = node.held.lock().expect("held lock");
                if let Some(q) = qubits.iter().find(|q| !held.contains(q)) {
                    anyhow::bail!("{} holds no qubit {q} for the controller", node.name);
                }
            }
            for chunk in qubits.chunks(qnet_common::wire::MAX_BATCH as usize) {
                node.broker
                    .call(RequestBody::Free {
                        qubits: chunk.to_vec(),
                    })
                    .await?;
            }
            let mut held = node.held.lock().expect("held lock");
            for q in &qubits {
                held.remove(q);
            }
            Ok(NodeResponseBody::Done)
        }
        NodeRequestBody::Status => Ok(NodeResponseBody::Status {
            name: node.name.clone(),
            qubits: node.held.lock().expect("held lock").len() as u32,
            connected_peers: node.peers.connected(),
        }),
        NodeRequestBody::HoldPairs { peer, count } => {
            node.check_neighbour(&peer)?;
            let pairs = node.create_pairs(&peer, count).await?;
            node.held
                .lock()
                .expect("held lock")
                .extend(pairs.iter().map(|p| p.local));
            Ok(NodeResponseBody::Pairs { pairs })
        }
        NodeRequestBody::RunLink { peer, spec } => node.run_link(&peer, spec).await,
        NodeRequestBody::SetPurposes { accept } => {
            *node.purposes.lock().expect("purposes lock") = accept.clone();
            let links: Vec<_> = node
                .links
                .lock()
                .expect("links lock")
                .values()
                .cloned()
                .collect();
            for link in links {
                link.send(crate::linklayer::Input::SetPurposes(accept.clone()));
            }
            Ok(NodeResponseBody::Done)
        }
        NodeRequestBody::LinkLog { peer } => Ok(NodeResponseBody::LinkLog {
            entries: node.link_log.entries(&peer),
        }),
        NodeRequestBody::SetChaos { peer, rule } => {
            anyhow::ensure!(
                node.topology.node_index(&peer).is_some() && peer != node.name,
                "unknown peer {peer:?}"
            );
            if !node.chaos.knows(&peer) {
                // Learn where the peer is, so the rule is in force at once.
                let addr = node.lookup(&peer).await?;
                node.chaos.peer_at(&peer, addr);
            }
            node.chaos.set_fault(&peer, rule)?;
            tracing::warn!(%peer, ?rule, t_emu = node.clock.now(), "fault: classical impairment set");
            Ok(NodeResponseBody::Done)
        }
        NodeRequestBody::ChaosRules => {
            let (faults, effective, stats) = node.chaos.report();
            Ok(NodeResponseBody::Chaos {
                faults,
                effective,
                stats,
            })
        }
        NodeRequestBody::Shutdown => Ok(NodeResponseBody::Done),
    }
}
