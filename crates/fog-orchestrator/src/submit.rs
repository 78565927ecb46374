//! Accepting requests: checks against stored state, then one atomic batch that records the
//! resource (marked busy) and the operation, then a runner is started.

use crate::catalog::{self, InstanceSecret};
use crate::{steps, store_err, Orchestrator};
use fog_model::instance::new_dns_zone;
use fog_model::{
    Action, ArmError, DatabaseChanges, DatabaseRecord, DatabaseSpec, DatabaseStatus,
    InstanceChanges, InstanceRecord, InstanceSpec, ManagedInstanceId, OperationKind,
    OperationRecord, OperationStatus, ProvisioningState, ServerEndpoint,
};
use fog_store::typed::put;
use fog_store::{Precondition, StoreError, Write};
use time::OffsetDateTime;

/// Outcome of a database PUT.
#[derive(Debug)]
pub enum DatabaseCreate {
    /// A create operation was started.
    Started(Box<OperationRecord>),
    /// The database already exists (PUT is idempotent); nothing to do.
    Exists(Box<DatabaseRecord>),
}

fn conflict_or_store(e: StoreError, busy: ArmError) -> ArmError {
    match e {
        StoreError::Conflict { .. } => busy,
        other => store_err(other),
    }
}

impl Orchestrator {
    fn new_operation(
        kind: OperationKind,
        instance: &ManagedInstanceId,
        location: &str,
        api_version: &str,
        action: Action,
    ) -> OperationRecord {
        OperationRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            scope: instance.scope.clone(),
            location: location.to_string(),
            api_version: api_version.to_string(),
            step: steps::first_step(&action).to_string(),
            action,
            status: OperationStatus::InProgress,
            percent_complete: Some(0),
            start_time: OffsetDateTime::now_utc(),
            end_time: None,
            error: None,
            attempts: 0,
        }
    }

    async fn pick_port(&self) -> Result<u16, ArmError> {
        let taken: std::collections::HashSet<u16> = catalog::all_instances(self.store.as_ref())
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|v| v.value.endpoint.port)
            .collect();
        let host = self.config.server_host.as_str();
        let free = |p: u16| std::net::TcpListener::bind((host, p)).is_ok();
        match self.config.port_range {
            Some((lo, hi)) => (lo..=hi)
                .find(|p| !taken.contains(p) && free(*p))
                .ok_or_else(|| {
                    ArmError::internal("no free port is left in the configured server port range")
                }),
            None => {
                for _ in 0..50 {
                    let port = std::net::TcpListener::bind((host, 0))
                        .and_then(|l| l.local_addr())
                        .map(|a| a.port())
                        .map_err(|e| ArmError::internal(format!("cannot find a free port: {e}")))?;
                    if !taken.contains(&port) {
                        return Ok(port);
                    }
                }
                Err(ArmError::internal("cannot find a free port"))
            }
        }
    }

    /// Accepts the creation of a new managed instance.
    pub async fn create_instance(
        &self,
        id: ManagedInstanceId,
        spec: InstanceSpec,
        api_version: &str,
    ) -> Result<OperationRecord, ArmError> {
        let store = self.store.as_ref();
        let dns_zone = match &spec.dns_zone_partner {
            Some(partner) => {
                catalog::instance(store, partner)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| {
                        ArmError::server_not_found().with_target("properties.dnsZonePartner")
                    })?
                    .value
                    .dns_zone
            }
            None => new_dns_zone(),
        };
        let _ports = self.port_lock.lock().await;
        let port = self.pick_port().await?;
        let uid = uuid::Uuid::new_v4().simple().to_string();
        let action = Action::CreateInstance {
            instance: id.clone(),
            admin_password_verifier: fog_engine::scram_verifier(&spec.administrator_login_password),
        };
        let op = Self::new_operation(
            OperationKind::ManagedInstance,
            &id,
            &spec.location,
            api_version,
            action,
        );
        let record = InstanceRecord {
            uid: uid.clone(),
            id: id.clone(),
            location: spec.location,
            tags: spec.tags,
            sku: spec.sku,
            administrator_login: spec.administrator_login,
            storage_size_in_gb: spec.storage_size_in_gb,
            dns_zone,
            database_format: spec.database_format,
            license_type: spec.license_type,
            collation: spec.collation,
            provisioning_state: ProvisioningState::Creating,
            endpoint: ServerEndpoint {
                host: self.config.server_host.clone(),
                port,
            },
            create_time: OffsetDateTime::now_utc(),
            active_operation: Some(op.id.clone()),
            generation: 1,
            failover_group: None,
        };
        let secret = InstanceSecret {
            superuser_password: fog_engine::random_secret(),
            replication_password: fog_engine::random_secret(),
            previous_superuser_password: None,
        };
        self.store
            .commit(vec![
                put(catalog::instance_key(&id), &record, Precondition::Absent),
                catalog::secret_put(&self.secrets, &uid, &secret, Precondition::Absent),
                put(catalog::operation_key(&op.id), &op, Precondition::Absent),
            ])
            .await
            .map_err(|e| {
                conflict_or_store(e, ArmError::conflicting_managed_instance_operation())
            })?;
        tracing::info!(instance = %id, operation = %op.id, port, "accepted instance create");
        self.spawn(op.id.clone());
        Ok(op)
    }

    /// Accepts a change to an existing instance (PATCH, or PUT on an existing name).
    pub async fn update_instance(
        &self,
        id: &ManagedInstanceId,
        changes: InstanceChanges,
        api_version: &str,
    ) -> Result<OperationRecord, ArmError> {
        let current = catalog::instance(self.store.as_ref(), id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                ArmError::managed_instance_not_found(&id.name, &id.scope.resource_group)
            })?;
        let mut rec = current.value;
        if rec.active_operation.is_some() {
            return Err(ArmError::conflicting_managed_instance_operation());
        }
        if let Some(partner) = &changes.dns_zone_partner {
            let zone = catalog::instance(self.store.as_ref(), partner)
                .await
                .map_err(store_err)?
                .map(|p| p.value.dns_zone);
            if zone.as_deref() != Some(rec.dns_zone.as_str()) {
                return Err(ArmError::property_change_not_allowed("dnsZonePartner")
                    .with_target("properties.dnsZonePartner"));
            }
        }
        let mut target = rec.clone();
        target.apply(&changes);
        target.provisioning_state = ProvisioningState::Succeeded;
        let action = Action::UpdateInstance {
            instance: rec.id.clone(),
            target: Box::new(target),
            admin_password_verifier: changes
                .administrator_login_password
                .as_deref()
                .map(fog_engine::scram_verifier),
        };
        let op = Self::new_operation(
            OperationKind::ManagedInstance,
            &rec.id,
            &rec.location,
            api_version,
            action,
        );
        rec.provisioning_state = ProvisioningState::Updating;
        rec.active_operation = Some(op.id.clone());
        self.store
            .commit(vec![
                put(
                    catalog::instance_key(id),
                    &rec,
                    Precondition::Revision(current.revision),
                ),
                put(catalog::operation_key(&op.id), &op, Precondition::Absent),
            ])
            .await
            .map_err(|e| {
                conflict_or_store(e, ArmError::conflicting_managed_instance_operation())
            })?;
        self.spawn(op.id.clone());
        Ok(op)
    }

    /// Accepts the deletion of an instance; `None` when it does not exist.
    pub async fn delete_instance(
        &self,
        id: &ManagedInstanceId,
        api_version: &str,
    ) -> Result<Option<OperationRecord>, ArmError> {
        let store = self.store.as_ref();
        let Some(current) = catalog::instance(store, id).await.map_err(store_err)? else {
            return Ok(None);
        };
        let mut rec = current.value;
        if rec.active_operation.is_some() {
            return Err(ArmError::conflicting_managed_instance_operation());
        }
        if let Some(uid) = &rec.failover_group {
            let name = catalog::group(store, uid)
                .await
                .map_err(store_err)?
                .map_or_else(|| uid.clone(), |g| g.value.name);
            return Err(ArmError::instance_in_failover_group(&rec.id.name, name));
        }
        let dbs = catalog::databases(store, id).await.map_err(store_err)?;
        if dbs.iter().any(|d| d.value.active_operation.is_some()) {
            return Err(ArmError::conflicting_managed_instance_operation());
        }
        let op = Self::new_operation(
            OperationKind::ManagedInstance,
            &rec.id,
            &rec.location,
            api_version,
            Action::DeleteInstance {
                instance: rec.id.clone(),
            },
        );
        rec.provisioning_state = ProvisioningState::Deleting;
        rec.active_operation = Some(op.id.clone());
        let mut writes = vec![
            put(
                catalog::instance_key(id),
                &rec,
                Precondition::Revision(current.revision),
            ),
            put(catalog::operation_key(&op.id), &op, Precondition::Absent),
        ];
        // No database operation may start in between.
        writes.extend(
            dbs.iter()
                .map(|d| Write::check(catalog::database_key(id, &d.value.name), d.revision)),
        );
        self.store.commit(writes).await.map_err(|e| {
            conflict_or_store(e, ArmError::conflicting_managed_instance_operation())
        })?;
        self.spawn(op.id.clone());
        Ok(Some(op))
    }

    /// The instance a database operation runs on: it must exist, be provisioned, and not be
    /// busy with an instance operation or (as a group member) a group operation. Returns it
    /// with the checks the accepting batch must carry: the instance's revision and, for a
    /// group member, the group's — so a failover accepted meanwhile makes the batch fail.
    async fn ready_instance(
        &self,
        id: &ManagedInstanceId,
    ) -> Result<(fog_store::typed::Versioned<InstanceRecord>, Vec<Write>), ArmError> {
        let inst = catalog::instance(self.store.as_ref(), id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                ArmError::managed_instance_not_found(&id.name, &id.scope.resource_group)
            })?;
        if inst.value.active_operation.is_some()
            || inst.value.provisioning_state != ProvisioningState::Succeeded
        {
            return Err(ArmError::conflicting_server_operation());
        }
        // A geo-secondary's databases are read-only replicas of the primary's.
        if let Some(uid) = &inst.value.failover_group {
            if let Some(g) = catalog::group(self.store.as_ref(), uid)
                .await
                .map_err(store_err)?
            {
                if g.value.secondary.instance.key() == id.key() {
                    return Err(ArmError::database_on_geo_secondary(&id.name, &g.value.name));
                }
                if g.value.active_operation.is_some() {
                    return Err(ArmError::conflicting_server_operation());
                }
                let checks = vec![
                    Write::check(catalog::instance_key(id), inst.revision),
                    Write::check(catalog::group_key(&g.value.uid), g.revision),
                ];
                return Ok((inst, checks));
            }
        }
        let checks = vec![Write::check(catalog::instance_key(id), inst.revision)];
        Ok((inst, checks))
    }

    /// Accepts the creation of a database (or reports that it exists).
    pub async fn create_database(
        &self,
        id: &ManagedInstanceId,
        name: &str,
        spec: DatabaseSpec,
        api_version: &str,
    ) -> Result<DatabaseCreate, ArmError> {
        let (inst, checks) = self.ready_instance(id).await?;
        if let Some(existing) = catalog::database(self.store.as_ref(), id, name)
            .await
            .map_err(store_err)?
        {
            if existing.value.active_operation.is_some() {
                return Err(ArmError::conflicting_server_operation());
            }
            if !existing
                .value
                .collation
                .eq_ignore_ascii_case(&spec.collation)
            {
                return Err(ArmError::property_change_not_allowed("collation")
                    .with_target("properties.collation"));
            }
            return Ok(DatabaseCreate::Exists(Box::new(existing.value)));
        }
        let op = Self::new_operation(
            OperationKind::ManagedDatabase,
            id,
            &inst.value.location,
            api_version,
            Action::CreateDatabase {
                instance: id.clone(),
                database: name.to_string(),
            },
        );
        let record = DatabaseRecord {
            instance: inst.value.id.clone(),
            instance_uid: inst.value.uid.clone(),
            name: name.to_string(),
            location: inst.value.location.clone(),
            tags: spec.tags,
            collation: spec.collation,
            status: DatabaseStatus::Creating,
            creation_date: OffsetDateTime::now_utc(),
            active_operation: Some(op.id.clone()),
        };
        let mut writes = checks;
        writes.extend([
            put(
                catalog::database_key(id, name),
                &record,
                Precondition::Absent,
            ),
            put(catalog::operation_key(&op.id), &op, Precondition::Absent),
        ]);
        self.store
            .commit(writes)
            .await
            .map_err(|e| conflict_or_store(e, ArmError::conflicting_server_operation()))?;
        self.spawn(op.id.clone());
        Ok(DatabaseCreate::Started(Box::new(op)))
    }

    /// Whether database `name` exists as seen from instance `id` (a group member sees its
    /// partner's databases too); false when the instance does not exist.
    async fn database_visible(&self, id: &ManagedInstanceId, name: &str) -> Result<bool, ArmError> {
        let store = self.store.as_ref();
        let Some(inst) = catalog::instance(store, id).await.map_err(store_err)? else {
            return Ok(false);
        };
        Ok(catalog::databases_of_group_member(store, &inst.value)
            .await
            .map_err(store_err)?
            .iter()
            .any(|d| d.value.name.eq_ignore_ascii_case(name)))
    }

    /// Accepts a change to an existing database (PATCH, or PUT on an existing name): one
    /// batch marks the database busy and writes an `UpdateDatabase` operation carrying the
    /// new tags (its changeable properties are metadata only, so the operation's one step
    /// commits them; clients poll it like any other, and its result is the database).
    pub async fn update_database(
        &self,
        id: &ManagedInstanceId,
        name: &str,
        changes: DatabaseChanges,
        api_version: &str,
    ) -> Result<OperationRecord, ArmError> {
        // Not there is 404 whatever state the instance is in.
        if !self.database_visible(id, name).await? {
            return Err(ArmError::managed_database_not_found(name));
        }
        let (inst, checks) = self.ready_instance(id).await?;
        let db = catalog::database(self.store.as_ref(), id, name)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ArmError::managed_database_not_found(name))?;
        if db.value.active_operation.is_some() {
            return Err(ArmError::conflicting_server_operation());
        }
        let mut rec = db.value;
        let action = Action::UpdateDatabase {
            instance: id.clone(),
            database: rec.name.clone(),
            tags: changes.tags.unwrap_or_else(|| rec.tags.clone()),
        };
        let op = Self::new_operation(
            OperationKind::ManagedDatabase,
            id,
            &inst.value.location,
            api_version,
            action,
        );
        rec.active_operation = Some(op.id.clone());
        let mut writes = checks;
        writes.extend([
            put(
                catalog::database_key(id, &rec.name),
                &rec,
                Precondition::Revision(db.revision),
            ),
            put(catalog::operation_key(&op.id), &op, Precondition::Absent),
        ]);
        self.store
            .commit(writes)
            .await
            .map_err(|e| conflict_or_store(e, ArmError::conflicting_server_operation()))?;
        self.spawn(op.id.clone());
        Ok(op)
    }

    /// Accepts the deletion of a database; `None` when there is none of that name at the
    /// address (or no such instance): nothing to delete.
    pub async fn delete_database(
        &self,
        id: &ManagedInstanceId,
        name: &str,
        api_version: &str,
    ) -> Result<Option<OperationRecord>, ArmError> {
        let store = self.store.as_ref();
        // Deleting what is not there is a no-op, whatever state the instance is in.
        if !self.database_visible(id, name).await? {
            return Ok(None);
        }
        // Then the instance, so a geo-secondary gets its clear refusal.
        let (inst, checks) = self.ready_instance(id).await?;
        let Some(db) = catalog::database(store, id, name)
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        if db.value.active_operation.is_some() {
            return Err(ArmError::conflicting_server_operation());
        }
        let op = Self::new_operation(
            OperationKind::ManagedDatabase,
            id,
            &inst.value.location,
            api_version,
            Action::DeleteDatabase {
                instance: id.clone(),
                database: db.value.name.clone(),
            },
        );
        let mut rec = db.value;
        rec.active_operation = Some(op.id.clone());
        let mut writes = checks;
        writes.extend([
            put(
                catalog::database_key(id, name),
                &rec,
                Precondition::Revision(db.revision),
            ),
            put(catalog::operation_key(&op.id), &op, Precondition::Absent),
        ]);
        self.store
            .commit(writes)
            .await
            .map_err(|e| conflict_or_store(e, ArmError::conflicting_server_operation()))?;
        self.spawn(op.id.clone());
        Ok(Some(op))
    }
}
