//! Accepting failover-group requests: the rules that need stored state (and a real
//! connectivity check), then one atomic batch recording the group, its members' membership
//! and the operation.

use crate::catalog::{self, InstanceSecret, ListenerReservation};
use crate::{store_err, Orchestrator};
use fog_engine::ReplicationSource;
use fog_model::failover_group::{
    validate_name, GroupSpec, ListenerPorts, Member, ReplicationState, SecondaryType,
};
use fog_model::{
    names, Action, ArmError, FailoverGroupRecord, InstanceRecord, OperationKind, OperationRecord,
    ProvisioningState, Scope, Side,
};
use fog_store::typed::{put, Versioned};
use fog_store::{Precondition, StoreError, Write};
use time::OffsetDateTime;

/// Where a group request was addressed: a member's subscription, resource group and
/// location (as spelled in the path).
#[derive(Debug, Clone)]
pub struct GroupAddress {
    pub scope: Scope,
    pub location: String,
}

impl GroupAddress {
    /// The location segment used in polling URLs (`Japan East` → `JapanEast`).
    pub fn url_location(&self) -> String {
        self.location.replace(' ', "")
    }
}

/// A `Standby` (non-readable, DR-only) secondary must be in its primary's Azure regional
/// pair (the catalogue's `InvalidTargetSubregion`); regions fogd does not know as Azure
/// regions are not judged.
fn check_standby_region(
    secondary_type: SecondaryType,
    primary_location: &str,
    secondary_location: &str,
) -> Result<(), ArmError> {
    if secondary_type == SecondaryType::Standby
        && names::dr_paired(primary_location, secondary_location) == Some(false)
    {
        return Err(ArmError::invalid_target_subregion().with_target("properties.secondaryType"));
    }
    Ok(())
}

fn busy(e: StoreError, err: ArmError) -> ArmError {
    match e {
        StoreError::Conflict { .. } => err,
        other => store_err(other),
    }
}

impl Orchestrator {
    /// The replication source a standby of `primary` uses.
    pub(crate) async fn replication_source(
        &self,
        primary: &InstanceRecord,
        standby_uid: &str,
        slot: &str,
    ) -> Result<ReplicationSource, ArmError> {
        let secret = catalog::secret(self.store.as_ref(), &self.secrets, &primary.uid)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ArmError::internal("the instance's credentials are missing"))?;
        Ok(ReplicationSource {
            host: primary.endpoint.host.clone(),
            port: primary.endpoint.port,
            password: secret.replication_password,
            slot: slot.to_string(),
            application_name: format!("fogd_{standby_uid}"),
        })
    }

    fn new_group_operation(
        addr: &GroupAddress,
        api_version: &str,
        action: Action,
    ) -> OperationRecord {
        OperationRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind: OperationKind::InstanceFailoverGroup,
            scope: addr.scope.clone(),
            location: addr.url_location(),
            api_version: api_version.to_string(),
            step: crate::steps::first_step(&action).to_string(),
            action,
            status: fog_model::OperationStatus::InProgress,
            percent_complete: Some(0),
            start_time: OffsetDateTime::now_utc(),
            end_time: None,
            error: None,
            attempts: 0,
        }
    }

    /// PUT on a group: creates it (at the primary's address) or updates its policies. The
    /// group at an address is the one with a member there under that name; groups of the
    /// same name elsewhere (other resource groups, locations, DNS zones) are other groups.
    pub async fn put_failover_group(
        &self,
        addr: &GroupAddress,
        name: &str,
        spec: GroupSpec,
        api_version: &str,
    ) -> Result<OperationRecord, ArmError> {
        validate_name(name)?;
        if let Some((existing, side)) = self.group_at(addr, name).await? {
            return match side {
                Side::Primary => self.update_group(addr, existing, spec, api_version).await,
                Side::Secondary => Err(ArmError::ifog_on_secondary()),
            };
        }
        self.create_group(addr, name, spec, api_version).await
    }

    /// The group named `name` with a member at `addr`, and which member.
    pub(crate) async fn group_at(
        &self,
        addr: &GroupAddress,
        name: &str,
    ) -> Result<Option<(Versioned<FailoverGroupRecord>, Side)>, ArmError> {
        catalog::group_at(
            self.store.as_ref(),
            &addr.scope.subscription,
            &addr.scope.resource_group,
            &addr.location,
            name,
        )
        .await
        .map_err(store_err)
    }

    async fn create_group(
        &self,
        addr: &GroupAddress,
        name: &str,
        spec: GroupSpec,
        api_version: &str,
    ) -> Result<OperationRecord, ArmError> {
        let store = self.store.as_ref();
        let primary_target = "properties.managedInstancePairs[0].primaryManagedInstanceId";
        let partner_target = "properties.managedInstancePairs[0].partnerManagedInstanceId";
        let primary = catalog::instance(store, &spec.primary)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ArmError::server_not_found().with_target(primary_target))?;
        let p = &primary.value;
        if p.id.scope.subscription != addr.scope.subscription
            || !p
                .id
                .scope
                .resource_group
                .eq_ignore_ascii_case(&addr.scope.resource_group)
            || p.location != names::location_key(&addr.location)
        {
            return Err(ArmError::ifog_invalid_primary().with_target(primary_target));
        }
        let partner = catalog::instance(store, &spec.partner)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ArmError::server_not_found().with_target(partner_target))?;
        let s = &partner.value;
        if names::location_key(&spec.partner_region) != s.location {
            return Err(
                ArmError::region_mismatch().with_target("properties.partnerRegions[0].location")
            );
        }
        if p.location == s.location {
            return Err(ArmError::same_region());
        }
        check_standby_region(spec.policies.secondary_type, &p.location, &s.location)?;
        if p.sku.tier != s.sku.tier {
            return Err(ArmError::edition_mismatch());
        }
        if p.storage_size_in_gb != s.storage_size_in_gb {
            return Err(ArmError::size_mismatch());
        }
        if p.dns_zone != s.dns_zone {
            return Err(ArmError::dns_zone_mismatch());
        }
        if p.database_format != s.database_format {
            return Err(ArmError::database_format_mismatch());
        }
        // The DNS record `{name}.{zone}` is the group's: no other group may have it. (The
        // batch below creates the index keys only if absent, so of two concurrent creates
        // one wins.)
        if catalog::group_with_dns_record(store, &p.dns_zone, name)
            .await
            .map_err(store_err)?
            .is_some()
        {
            return Err(ArmError::ifog_dns_record_in_use());
        }
        // The group is addressed from the partner's side too: a group of this name with a
        // member there already has that address.
        if catalog::group_at(
            store,
            &s.id.scope.subscription,
            &s.id.scope.resource_group,
            &s.location,
            name,
        )
        .await
        .map_err(store_err)?
        .is_some()
        {
            return Err(ArmError::ifog_already_exists().with_target(partner_target));
        }
        if p.failover_group.is_some() || s.failover_group.is_some() {
            return Err(ArmError::ifog_already_exists());
        }
        for inst in [p, s] {
            if inst.active_operation.is_some()
                || inst.provisioning_state != ProvisioningState::Succeeded
            {
                return Err(ArmError::conflicting_server_operation());
            }
        }
        // The secondary must be empty: no database records, and nothing created behind
        // fogd's back either (seeding would silently replace it).
        let s_spec = self.server_spec(s).await?;
        // Both servers should run; right after fogd starts the supervisor may still be
        // starting them, so give them a bounded moment (a server that cannot start fails
        // the checks below with their own errors).
        for inst in [p, s] {
            let spec = self.server_spec(inst).await?;
            let started = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                self.agent.ensure_running(&spec, inst.generation),
            )
            .await;
            if !matches!(started, Ok(Ok(()))) {
                tracing::warn!(instance = %inst.id, "server not running while a group is created");
            }
        }
        let on_server = self.agent.list_databases(&s_spec).await.map_err(|e| {
            tracing::warn!(error = %e, "listing the partner's databases failed");
            ArmError::conflicting_server_operation()
        })?;
        let recorded = catalog::databases(store, &s.id).await.map_err(store_err)?;
        if !recorded.is_empty() || !on_server.is_empty() {
            return Err(ArmError::secondary_not_empty());
        }
        // Connectivity first: the secondary's side must reach the primary for replication,
        // with the replication role and its credentials.
        let slot = format!("fogd_{}", s.uid);
        let source = self.replication_source(p, &s.uid, &slot).await?;
        if let Err(e) = self.agent.check_replication_source(&s_spec, &source).await {
            tracing::warn!(error = %e, "replication connectivity check failed");
            return Err(ArmError::incorrect_networking());
        }

        let _ports = self.port_lock.lock().await;
        let listeners = self.listener_ports(&p.dns_zone, name).await?;
        let uid = fog_model::failover_group::new_uid();
        let op = Self::new_group_operation(
            addr,
            api_version,
            Action::CreateFailoverGroup {
                name: name.to_string(),
                uid: uid.clone(),
            },
        );
        let group = FailoverGroupRecord {
            name: name.to_string(),
            uid: uid.clone(),
            primary: Member {
                instance: p.id.clone(),
                uid: p.uid.clone(),
                location: p.location.clone(),
                location_label: addr.location.clone(),
            },
            secondary: Member {
                instance: s.id.clone(),
                uid: s.uid.clone(),
                location: s.location.clone(),
                location_label: spec.partner_region.clone(),
            },
            policies: spec.policies,
            replication_state: ReplicationState::Pending,
            // Above every generation either server has accepted (from earlier groups'
            // failovers), so the group's commands are never refused as stale.
            generation: p.generation.max(s.generation).max(1),
            active_operation: Some(op.id.clone()),
            listeners,
            dns_zone: p.dns_zone.clone(),
            slot,
            seeding: None,
            created: OffsetDateTime::now_utc(),
            switch: None,
            secondary_needs_rejoin: false,
            last_failover: None,
        };
        // Roles are replicated data: once seeded, the secondary has the primary's internal
        // credentials. The old superuser password is kept until the alignment step ran.
        let p_secret = catalog::secret(store, &self.secrets, &p.uid)
            .await
            .map_err(store_err)?;
        let s_secret = catalog::secret(store, &self.secrets, &s.uid)
            .await
            .map_err(store_err)?;
        let (Some(p_secret), Some(s_secret)) = (p_secret, s_secret) else {
            return Err(ArmError::internal("the instances' credentials are missing"));
        };
        let aligned = InstanceSecret {
            superuser_password: p_secret.superuser_password.clone(),
            replication_password: p_secret.replication_password.clone(),
            previous_superuser_password: Some(s_secret.superuser_password),
        };
        let mut p_rec = p.clone();
        p_rec.failover_group = Some(uid.clone());
        let mut s_rec = s.clone();
        s_rec.failover_group = Some(uid.clone());
        let mut writes = catalog::group_index_puts(&group);
        writes.extend([
            put(catalog::group_key(&uid), &group, Precondition::Absent),
            put(
                catalog::instance_key(&p.id),
                &p_rec,
                Precondition::Revision(primary.revision),
            ),
            put(
                catalog::instance_key(&s.id),
                &s_rec,
                Precondition::Revision(partner.revision),
            ),
            catalog::secret_put(&self.secrets, &s.uid, &aligned, Precondition::Any),
            put(
                catalog::listener_ports_key(&group.dns_zone, name),
                &ListenerReservation { ports: listeners },
                Precondition::Any,
            ),
            put(catalog::operation_key(&op.id), &op, Precondition::Absent),
        ]);
        let dns_key = catalog::group_dns_key(&group.dns_zone, name);
        self.store.commit(writes).await.map_err(|e| match e {
            // A concurrent create took the DNS record first.
            StoreError::Conflict { key } if key == dns_key => ArmError::ifog_dns_record_in_use(),
            e => busy(e, ArmError::conflicting_server_operation()),
        })?;
        tracing::info!(group = name, uid = %uid, operation = %op.id, "accepted failover group create");
        self.spawn(op.id.clone());
        Ok(op)
    }

    async fn update_group(
        &self,
        addr: &GroupAddress,
        existing: Versioned<FailoverGroupRecord>,
        spec: GroupSpec,
        api_version: &str,
    ) -> Result<OperationRecord, ArmError> {
        let g = existing.value;
        if g.active_operation.is_some() {
            return Err(ArmError::ifog_busy());
        }
        if spec.primary.key() != g.primary.instance.key()
            || spec.partner.key() != g.secondary.instance.key()
        {
            return Err(
                ArmError::ifog_read_only_property_modified("managedInstancePairs")
                    .with_target("properties.managedInstancePairs"),
            );
        }
        if names::location_key(&spec.partner_region) != g.secondary.location {
            return Err(ArmError::ifog_read_only_property_modified("partnerRegions")
                .with_target("properties.partnerRegions"));
        }
        let mut policies = spec.policies;
        if !spec.secondary_type_stated {
            // Not in the body, or not in the request's api-version: unchanged.
            policies.secondary_type = g.policies.secondary_type;
        }
        check_standby_region(
            policies.secondary_type,
            &g.primary.location,
            &g.secondary.location,
        )?;
        let (name, uid) = (g.name.clone(), g.uid.clone());
        let op = self
            .start_group_operation(
                g,
                existing.revision,
                addr,
                api_version,
                Action::UpdateFailoverGroup {
                    name,
                    uid,
                    policies,
                },
                vec![],
            )
            .await?;
        Ok(op)
    }

    /// DELETE on a group; `None` when no group of that name has a member at the address
    /// (whatever exists elsewhere): nothing to delete there.
    pub async fn delete_failover_group(
        &self,
        addr: &GroupAddress,
        name: &str,
        api_version: &str,
    ) -> Result<Option<OperationRecord>, ArmError> {
        let Some((existing, side)) = self.group_at(addr, name).await? else {
            return Ok(None);
        };
        if side == Side::Secondary {
            return Err(ArmError::ifog_on_secondary());
        }
        let g = existing.value;
        if g.active_operation.is_some() {
            return Err(ArmError::ifog_busy());
        }
        let (name, uid) = (g.name.clone(), g.uid.clone());
        let op = self
            .start_group_operation(
                g,
                existing.revision,
                addr,
                api_version,
                Action::DeleteFailoverGroup { name, uid },
                vec![],
            )
            .await?;
        Ok(Some(op))
    }

    /// POST `failover` (`planned`) or `forceFailoverAllowDataLoss`, addressed at the
    /// current secondary.
    pub async fn failover_group(
        &self,
        addr: &GroupAddress,
        name: &str,
        planned: bool,
        api_version: &str,
    ) -> Result<OperationRecord, ArmError> {
        let store = self.store.as_ref();
        // A group of that name elsewhere is no group at this address.
        let (existing, side) = self.group_at(addr, name).await?.ok_or_else(|| {
            ArmError::child_resource_not_found(fog_model::failover_group::RESOURCE_TYPE, name)
        })?;
        if side == Side::Primary {
            return Err(ArmError::ifog_failover_on_primary());
        }
        let g = existing.value;
        if g.active_operation.is_some() {
            return Err(ArmError::ifog_busy());
        }
        // A secondary that is a former primary not yet rewound holds an old history:
        // promoting it would throw away everything written since the last failover.
        if g.secondary_needs_rejoin
            || matches!(
                g.replication_state,
                ReplicationState::Pending | ReplicationState::Seeding
            )
        {
            return Err(ArmError::incorrect_replication_link_state());
        }
        let formats = member_formats(store, &g).await?;
        if formats.0 != formats.1 {
            return Err(ArmError::failover_format_mismatch());
        }
        let (group_name, uid) = (g.name.clone(), g.uid.clone());
        let event = fog_model::health::GroupEvent::new(
            fog_model::health::EventKind::FailoverStarted,
            g.generation,
            format!(
                "{} failover to {} requested through the API",
                if planned {
                    "planned"
                } else {
                    "forced (allow data loss)"
                },
                g.secondary.instance.name
            ),
        );
        let op = self
            .start_group_operation(
                g,
                existing.revision,
                addr,
                api_version,
                Action::FailoverGroup {
                    name: group_name,
                    uid: uid.clone(),
                    planned,
                    automatic: None,
                },
                vec![catalog::event_write(&uid, &event)],
            )
            .await?;
        tracing::info!(group = name, uid = %uid, planned, operation = %op.id, "accepted failover");
        Ok(op)
    }

    /// Marks the group busy with a new operation (CAS on the revision it was read at, so a
    /// concurrent request gets `InstanceFailoverGroupBusy`) and starts its runner.
    pub(crate) async fn start_group_operation(
        &self,
        mut g: FailoverGroupRecord,
        revision: u64,
        addr: &GroupAddress,
        api_version: &str,
        action: Action,
        extra: Vec<Write>,
    ) -> Result<OperationRecord, ArmError> {
        // A database operation on either member excludes a group operation, and the other
        // way round (see `ready_instance`): a failover must not move a database record out
        // from under its own creation. The checks make the exclusion atomic.
        let mut checks = Vec::new();
        for member in [&g.primary.instance, &g.secondary.instance] {
            for db in catalog::databases(self.store.as_ref(), member)
                .await
                .map_err(store_err)?
            {
                if db.value.active_operation.is_some() {
                    return Err(ArmError::conflicting_server_operation());
                }
                checks.push(Write::check(
                    catalog::database_key(member, &db.value.name),
                    db.revision,
                ));
            }
        }
        let op = Self::new_group_operation(addr, api_version, action);
        g.active_operation = Some(op.id.clone());
        let mut writes = checks;
        writes.extend(vec![
            put(
                catalog::group_key(&g.uid),
                &g,
                Precondition::Revision(revision),
            ),
            put(catalog::operation_key(&op.id), &op, Precondition::Absent),
        ]);
        writes.extend(extra);
        self.store
            .commit(writes)
            .await
            .map_err(|e| busy(e, ArmError::ifog_busy()))?;
        self.spawn(op.id.clone());
        Ok(op)
    }

    /// Listener ports for a group's DNS record `{name}.{zone}`: the ones it used before if
    /// still free, else new.
    async fn listener_ports(&self, zone: &str, name: &str) -> Result<ListenerPorts, ArmError> {
        let store = self.store.as_ref();
        let mut taken: std::collections::HashSet<u16> = catalog::groups(store)
            .await
            .map_err(store_err)?
            .iter()
            .flat_map(|g| [g.value.listeners.read_write, g.value.listeners.read_only])
            .collect();
        taken.extend(
            catalog::all_instances(store)
                .await
                .map_err(store_err)?
                .iter()
                .map(|i| i.value.endpoint.port),
        );
        let host = self.config.listener_host.as_str();
        let free = |taken: &std::collections::HashSet<u16>, p: u16| {
            !taken.contains(&p) && std::net::TcpListener::bind((host, p)).is_ok()
        };
        let reserved = match catalog::listener_reservation(store, zone, name)
            .await
            .map_err(store_err)?
        {
            Some(r) => Some(r),
            None => fog_store::typed::get::<ListenerReservation>(
                store,
                &catalog::legacy_listener_ports_key(name),
            )
            .await
            .map_err(store_err)?
            .map(|v| v.value),
        };
        if let Some(r) = reserved {
            let (rw, ro) = (r.ports.read_write, r.ports.read_only);
            if rw != ro && free(&taken, rw) && free(&taken, ro) {
                return Ok(r.ports);
            }
        }
        let pick = |taken: &mut std::collections::HashSet<u16>| -> Result<u16, ArmError> {
            let port = match self.config.listener_ports {
                Some((lo, hi)) => (lo..=hi).find(|p| free(taken, *p)),
                None => (0..50).find_map(|_| {
                    std::net::TcpListener::bind((host, 0))
                        .and_then(|l| l.local_addr())
                        .ok()
                        .map(|a| a.port())
                        .filter(|p| !taken.contains(p))
                }),
            }
            .ok_or_else(|| ArmError::internal("no free listener port"))?;
            taken.insert(port);
            Ok(port)
        };
        let read_write = pick(&mut taken)?;
        let read_only = pick(&mut taken)?;
        Ok(ListenerPorts {
            read_write,
            read_only,
        })
    }
}

/// The members' `databaseFormat`s (update policies).
async fn member_formats(
    store: &dyn fog_store::Store,
    g: &FailoverGroupRecord,
) -> Result<(String, String), ArmError> {
    let get = |id| async move {
        catalog::instance(store, id)
            .await
            .map_err(store_err)?
            .map(|v| v.value.database_format)
            .ok_or_else(ArmError::server_not_found)
    };
    Ok((
        get(&g.primary.instance).await?,
        get(&g.secondary.instance).await?,
    ))
}

/// Writes that detach both members from a group (by its uid; used by delete and failed
/// creates).
pub(crate) fn detach_members(members: &[(Versioned<InstanceRecord>, &str)]) -> Vec<Write> {
    members
        .iter()
        .filter(|(m, group)| m.value.failover_group.as_deref() == Some(*group))
        .map(|(m, _)| {
            let mut rec = m.value.clone();
            rec.failover_group = None;
            put(
                catalog::instance_key(&rec.id),
                &rec,
                Precondition::Revision(m.revision),
            )
        })
        .collect()
}
