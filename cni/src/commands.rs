//! ADD, DEL, CHECK, STATUS and GC. Each returns what goes on stdout, or the error.

use cats_controller::{
    dataplane::program::{ensure_bpffs, is_bpffs},
    paths,
    registry::{self, Registration},
};
use serde_json::Value;

use crate::{
    attachment,
    conf::NetConf,
    env::Attachment,
    log, pod_link, prev_result,
    spec::{CniError, Code, at_least},
};

/// ADD: find the pod's veth pair, register the pod, attach the headend at the node's end.
/// Prints the previous result, unchanged: cats adds no interface or address.
pub fn add(conf: &NetConf, attachment: &Attachment) -> Result<Value, CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "prevResult is missing: cats-cni chains after the plugin that creates the pod's \
             interface (Calico, ptp, bridge)",
        )
    })?;
    let addresses = prev_result::pod_addresses(prev)?;
    let netns = attachment.netns.as_deref().expect("ADD requires CNI_NETNS");
    let pair = pod_link::find(netns, &attachment.ifname)?;
    let listed = prev_result::host_interfaces(prev);
    if !listed.is_empty() && !listed.contains(&pair.host_interface) {
        log(&format!(
            "prevResult lists host interfaces {listed:?}, but the peer of {} is {}; using the \
             peer",
            attachment.ifname, pair.host_interface
        ));
    }
    pod_link::prepare_pod_end(netns, &attachment.ifname)?;
    pod_link::add_neighbours(&pair, &addresses)?;

    let registration = Registration {
        network: conf.name.clone(),
        container_id: attachment.container_id.clone(),
        ifname: attachment.ifname.clone(),
        node: conf.node.clone(),
        host_interface: pair.host_interface.clone(),
        netns: netns.to_path_buf(),
        namespace: attachment.pod_namespace.clone(),
        pod: attachment.pod_name.clone(),
        addresses,
    };
    // Registered before attaching: the agent keeps the pins of registered pods, so an agent
    // applying a state compiled before this pod existed cannot remove the new link.
    registry::write(&conf.registry, &registration).map_err(|e| {
        CniError::caused(Code::Io, format!("registering the pod in {}", conf.registry.display()), e)
    })?;
    let attached = ensure_bpffs(&conf.bpffs)
        // The registry directory (it exists: the registration is in it) serialises the
        // creation of the node's maps between concurrent ADDs.
        .and_then(|()| attachment::attach(&conf.pins(), &pair.host_interface, &conf.registry));
    match attached {
        Ok(how) => log(&format!(
            "{}/{}: headend attached to {} ({how:?}), pod registered",
            attachment.container_id, attachment.ifname, pair.host_interface
        )),
        Err(e) => {
            // Nothing stays behind from a failed ADD.
            let _ = registry::remove(&conf.registry, &attachment.container_id, &attachment.ifname);
            let _ = pod_link::remove_neighbours(&pair.host_interface, &registration.addresses);
            return Err(CniError::caused(
                Code::AttachFailed,
                format!("attaching the cats headend to {}", pair.host_interface),
                e,
            ));
        }
    }
    let mut result = prev.clone();
    result.entry("cniVersion").or_insert_with(|| Value::String(conf.cni_version.clone()));
    Ok(Value::Object(result))
}

/// DEL: detach and unregister. Whatever is already gone is fine, the netns included.
pub fn del(conf: &NetConf, attachment: &Attachment) -> Result<(), CniError> {
    let (id, ifname) = (&attachment.container_id, &attachment.ifname);
    match registry::read(&conf.registry, id, ifname) {
        Ok(Some(registration)) => release(conf, &registration)?,
        Ok(None) => log(&format!("{id}/{ifname}: not registered; nothing to do")),
        Err(e) => log(&format!("{id}/{ifname}: unreadable registration removed: {e}")),
    }
    registry::remove(&conf.registry, id, ifname)
        .map_err(|e| CniError::caused(Code::Io, "removing the registration", e))
}

/// Detaches the headend from the pod's interface (unless another registration claims the
/// same interface name: a new pod that got the name first) and removes the registration.
fn release(conf: &NetConf, registration: &Registration) -> Result<(), CniError> {
    let claimed_again = registry::list(&conf.registry).registrations.iter().any(|(_, other)| {
        other.node == registration.node
            && other.host_interface == registration.host_interface
            && (other.container_id != registration.container_id
                || other.ifname != registration.ifname)
    });
    if !claimed_again {
        let pins = paths::node_pins(&conf.bpffs, &conf.scope, &registration.node);
        attachment::detach(&pins, &registration.host_interface).map_err(|e| {
            CniError::caused(Code::Io, format!("detaching from {}", registration.host_interface), e)
        })?;
        pod_link::remove_neighbours(&registration.host_interface, &registration.addresses)
            .map_err(|e| CniError::caused(Code::Io, "removing the pod's neighbour entries", e))?;
    }
    registry::remove(&conf.registry, &registration.container_id, &registration.ifname)
        .map_err(|e| CniError::caused(Code::Io, "removing the registration", e))?;
    log(&format!(
        "{}/{}: detached from {}, pod unregistered",
        registration.container_id, registration.ifname, registration.host_interface
    ));
    Ok(())
}

/// CHECK: the pair, the registration and the attachment are as ADD left them.
pub fn check(conf: &NetConf, attachment: &Attachment) -> Result<(), CniError> {
    if !at_least(&conf.cni_version, "0.4.0") {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!(
                "CHECK needs cniVersion 0.4.0 or later, the configuration has {}",
                conf.cni_version
            ),
        ));
    }
    if conf.prev_result.is_none() {
        return Err(CniError::new(Code::InvalidConfig, "CHECK needs prevResult"));
    }
    let netns = attachment.netns.as_deref().expect("CHECK requires CNI_NETNS");
    let pair = pod_link::find(netns, &attachment.ifname)?;
    let failed = |msg: String| CniError::new(Code::CheckFailed, msg);
    let registration = registry::read(&conf.registry, &attachment.container_id, &attachment.ifname)
        .map_err(|e| failed(format!("unreadable registration: {e}")))?
        .ok_or_else(|| failed(format!("{} is not registered", attachment.container_id)))?;
    if registration.host_interface != pair.host_interface {
        return Err(failed(format!(
            "registered with host interface {}, but the pod's peer is {}",
            registration.host_interface, pair.host_interface
        )));
    }
    attachment::check(&conf.pins(), &pair.host_interface)
        .map_err(|e| CniError::caused(Code::CheckFailed, "the cats headend is not attached", e))?;
    let prepared = pod_link::pod_end_prepared(netns, &attachment.ifname)
        .map_err(|e| CniError::caused(Code::CheckFailed, "reading the pod's offloads", e))?;
    if !prepared {
        return Err(failed(format!(
            "GRO is off on {} in the pod: steered requests cannot be redirected into it",
            attachment.ifname
        )));
    }
    Ok(())
}

/// STATUS: ready when pins and registrations can be written.
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    needs_1_1(conf, "STATUS")?;
    let not_available = |msg: String| CniError::new(Code::NotAvailable, msg);
    match is_bpffs(&conf.bpffs) {
        Ok(true) => {}
        Ok(false) => {
            return Err(not_available(format!("no bpffs mounted at {}", conf.bpffs.display())));
        }
        Err(e) => {
            return Err(CniError::caused(
                Code::NotAvailable,
                format!("cannot look at {}", conf.bpffs.display()),
                e,
            ));
        }
    }
    std::fs::create_dir_all(&conf.registry).map_err(|e| {
        CniError::caused(
            Code::NotAvailable,
            format!("cannot create the registry {}", conf.registry.display()),
            e,
        )
    })
}

/// GC: releases this network's attachments the runtime no longer knows.
pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    needs_1_1(conf, "GC")?;
    let valid = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::new(Code::InvalidConfig, "GC needs cni.dev/valid-attachments"))?;
    let mut failures = Vec::new();
    for (file, registration) in registry::list(&conf.registry).registrations {
        let key = (registration.container_id.clone(), registration.ifname.clone());
        if registration.network != conf.name || valid.contains(&key) {
            continue;
        }
        if let Err(e) = release(conf, &registration) {
            failures.push(format!("{file}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError {
            code: Code::Io,
            msg: format!("{} stale attachments could not be released", failures.len()),
            details: failures.join("; "),
        })
    }
}

fn needs_1_1(conf: &NetConf, command: &str) -> Result<(), CniError> {
    if at_least(&conf.cni_version, "1.1.0") {
        Ok(())
    } else {
        Err(CniError::new(
            Code::IncompatibleVersion,
            format!("{command} needs cniVersion 1.1.0, the configuration has {}", conf.cni_version),
        ))
    }
}
