//! The ARM error envelope and the catalogue of codes fogd emits.
//!
//! Every failure that reaches a client is an [`ArmError`]: an HTTP status, a PascalCase
//! `code`, a human `message` and an optional `target` (the offending property or path).
//! Catalogue entries carry the verbatim messages from the Microsoft.Sql reference; the few
//! ARM-level codes outside that catalogue follow ARM's own conventions.

use serde::Serialize;

/// An error as ARM reports it: `{"error":{"code","message","target"?}}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
#[error("({code}) {message}")]
pub struct ArmError {
    /// HTTP status code of the response that carries this error.
    pub status: u16,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
}

impl ArmError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            target: None,
        }
    }

    /// Names the property or path the error is about.
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// The JSON body of an error response.
    pub fn envelope(&self) -> serde_json::Value {
        let mut e = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(t) = &self.target {
            e["target"] = serde_json::Value::String(t.clone());
        }
        serde_json::json!({ "error": e })
    }
}

/// Declares one constructor per catalogue entry: `fn name(args) -> ArmError`, where `{0}`…
/// placeholders in the message are filled positionally.
macro_rules! catalogue {
    ($( $(#[$doc:meta])* $fn_name:ident ( $($arg:ident),* ) => $status:literal, $code:literal, $msg:literal; )*) => {
        impl ArmError {
            $(
                $(#[$doc])*
                #[allow(clippy::new_ret_no_self)]
                pub fn $fn_name($($arg: impl std::fmt::Display),*) -> ArmError {
                    #[allow(unused_mut)]
                    let mut message = String::from($msg);
                    let _args: Vec<String> = vec![$($arg.to_string()),*];
                    for (i, a) in _args.iter().enumerate() {
                        message = message.replace(&format!("{{{i}}}"), a);
                    }
                    ArmError::new($status, $code, message)
                }
            )*
        }
    };
}

catalogue! {
    // ---- ARM-level conditions (outside the SQL catalogue) ----
    /// `api-version` query parameter absent.
    missing_api_version() => 400, "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.";
    /// `api-version` present but malformed (not `YYYY-MM-DD[-suffix]`).
    invalid_api_version(version, supported) => 400, "InvalidApiVersionParameter",
        "The api-version '{0}' is invalid. The supported versions are '{1}'.";
    /// A well-formed `api-version` the addressed resource type is not published in.
    no_registered_provider(version, resource_type, supported) => 400, "NoRegisteredProviderFound",
        "No registered resource provider found for API version '{0}' and type '{1}'. The supported api-versions are '{2}'.";
    /// No `Authorization` header.
    authentication_missing() => 401, "AuthenticationFailed",
        "Authentication failed. The 'Authorization' header is missing.";
    /// Wrong bearer token or wrong scheme.
    invalid_token() => 401, "InvalidAuthenticationToken",
        "The access token is invalid.";
    /// A token fogd signed whose `exp` has passed (ARM's wording).
    expired_token(expiry, now) => 401, "ExpiredAuthenticationToken",
        "The access token expiry UTC time '{0}' is earlier than current UTC time '{1}'.";
    /// A token fogd signed for an audience it does not serve (ARM's wording).
    invalid_token_audience(audience, accepted) => 401, "InvalidAuthenticationTokenAudience",
        "The access token has been obtained for wrong audience or resource '{0}'. It should exactly match with one of the allowed audiences '{1}'.";
    /// A token fogd signed with another issuer than its own (ARM's wording).
    invalid_token_issuer(issuer, expected) => 401, "InvalidAuthenticationTokenTenant",
        "The access token is from the wrong issuer '{0}'. It must match the tenant '{1}' associated with this subscription. Please use the authority (URL) '{1}' to get the token.";
    /// Body is not JSON, has wrong types, or lacks a required property.
    invalid_request_content(detail) => 400, "InvalidRequestContent",
        "The request content was invalid and could not be deserialized: '{0}'.";
    /// A property holds a value outside its allowed set.
    invalid_parameter_value(name, value) => 400, "InvalidParameterValue",
        "Invalid value '{1}' given for parameter '{0}'. Specify a valid parameter value.";
    /// The body exceeded the server's size limit.
    request_too_large(limit) => 413, "RequestEntityTooLarge",
        "The request content size exceeds the maximum allowed size of {0} bytes.";
    /// The request line and headers exceeded the server's size limit.
    request_headers_too_large(size, limit) => 431, "RequestHeaderFieldsTooLarge",
        "The request line and headers are {0} bytes, more than the maximum allowed size of {1} bytes.";
    /// The request line or a header could not be parsed (answered below the router).
    malformed_request(detail) => 400, "BadRequest",
        "The request could not be parsed: {0}. Send a valid HTTP/1.1 or HTTP/2 request.";
    /// The request target is longer than the HTTP parser accepts.
    request_uri_too_long() => 414, "RequestUriTooLong",
        "The request URI is longer than the server accepts.";
    /// The request was not answered within the server's request timeout (ARM's wording).
    gateway_timeout() => 504, "GatewayTimeout",
        "The gateway did not receive a response from 'Microsoft.Sql' within the specified time period.";
    /// The path does not name a resource type fogd serves.
    invalid_resource_type(path) => 404, "InvalidResourceType",
        "The resource type could not be found for the path '{0}'.";
    /// The method is not defined for the addressed resource.
    method_not_allowed(method) => 405, "MethodNotAllowed",
        "The HTTP method '{0}' is not supported for the addressed resource.";
    /// Subscription segment is not a GUID.
    invalid_subscription_id(id) => 400, "InvalidSubscriptionId",
        "The provided subscription identifier '{0}' is malformed or invalid.";
    /// Resource group segment fails ARM's naming rules.
    invalid_resource_group_name(name) => 400, "ResourceGroupNameInvalid",
        "Resource group name '{0}' is invalid. It must be 1-90 characters of letters, digits, '_', '-', '.', '(' or ')', and must not end with '.'.";
    /// Tracked resource not found (ARM's pattern for managed instances).
    tracked_resource_not_found(kind, name, rg) => 404, "ResourceNotFound",
        "The Resource '{0}/{1}' under resource group '{2}' was not found.";
    /// Child/proxy resource not found (Microsoft.Sql's pattern).
    child_resource_not_found(kind, name) => 404, "ResourceNotFound",
        "The requested resource of type '{0}' with name '{1}' was not found.";
    /// A child resource addressed under a parent that does not exist (ARM's wording).
    parent_resource_not_found(parent) => 404, "ParentResourceNotFound",
        "Can not perform requested operation on nested resource. Parent resource '{0}' not found.";
    /// `location` absent on a create.
    location_required() => 400, "LocationRequired",
        "The location property is required for this definition.";
    /// PUT on an existing resource tries to move it.
    invalid_resource_location(name, existing, requested) => 400, "InvalidResourceLocation",
        "The resource '{0}' already exists in location '{1}'. A resource with the same name cannot be created in location '{2}'.";
    /// PUT/PATCH tries to change a create-only property.
    property_change_not_allowed(property) => 409, "PropertyChangeNotAllowed",
        "Changing property '{0}' is not allowed.";
    /// Status URL for an operation id fogd does not know.
    operation_id_not_found() => 404, "OperationIdNotFound",
        "The operation with Id does not exist.";

    // ---- Microsoft.Sql catalogue ----
    /// Malformed managed instance name or id.
    invalid_server_name() => 400, "InvalidServerName", "Invalid server name specified.";
    /// NUL or invalid Unicode in a name.
    invalid_identifier() => 400, "InvalidIdentifier",
        "The identifier contains NULL or an invalid unicode character.";
    /// Over-long name.
    token_too_long() => 400, "TokenTooLong", "The provided token is too long.";
    /// Invalid sku.
    invalid_sku() => 400, "InvalidSku", "The user specified an invalid sku.";
    /// A managed instance id inside a body does not resolve.
    server_not_found() => 400, "ServerNotFound", "The requested server was not found.";
    /// Reserved database name on create.
    reserved_database_name() => 400, "CannotUseReservedDatabaseName",
        "Cannot use reserved database name in this operation.";
    /// Another operation runs on the instance.
    conflicting_server_operation() => 409, "ConflictingServerOperation",
        "An operation is currently in progress for the server.";
    /// Another operation runs on the managed instance (managed-instance catalogue).
    conflicting_managed_instance_operation() => 409, "ConflictingManagedInstanceOperation",
        "An operation is currently in progress for the managed instance.";
    /// Generic LRO failure.
    operation_timed_out() => 500, "OperationTimedOut",
        "The operation timed out and automatically rolled back. Please retry the operation.";
    /// An operation was interrupted and could not be completed.
    operation_interrupted() => 409, "OperationInterrupted",
        "The operation on the resource could not be completed because it was interrupted by another operation on the same resource.";

    // ---- Instance failover groups ----
    ifog_invalid_primary() => 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidPrimary",
        "The given primary field in create or update instance failover group request body is empty or invalid.";
    ifog_invalid_partner() => 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidPartner",
        "The given partners field in create or update instance failover group request body is empty or invalid.";
    ifog_duplicate_partner() => 400, "InstanceFailoverGroupCreateOrUpdateRequestDuplicatePartner",
        "One or more of the provided partner servers are already part of the instance failover group. Please make sure the primary server and all of the given partner servers are unique.";
    ifog_invalid_region() => 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidManagedInstanceRegion",
        "The provided partner managed instance region in the instance failover group request body is empty or invalid.";
    ifog_partner_count() => 400, "InstanceFailoverGroupCreateOrUpdateRequestUnsupportedPartnerCount",
        "Only one partner region is supported.";
    ifog_pair_count() => 400, "InstanceFailoverGroupCreateOrUpdateRequestUnsupportedPairCount",
        "Only one managed instance pair is supported.";
    ifog_missing_read_write_endpoint() => 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpoint",
        "The readWriteEndpoint field is required for create or update requests.";
    ifog_invalid_request() => 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalid",
        "The create or update instance failover group request body is empty or invalid.";
    ifog_on_secondary() => 400, "InstanceFailoverGroupUpdateOrDeleteRequestOnSecondary",
        "Modifications to the instance failover group are not allowed on a secondary server. Execute the request on the primary server.";
    ifog_negative_grace() => 400, "InstanceFailoverGroupCreateOrUpdateRequestNegativeGracePeriodValues",
        "Grace period value for the read-write endpoint must be non-negative.";
    ifog_grace_below_minimum(minimum) => 400, "InstanceFailoverGroupCreateOrUpdateRequestLessThanMinimumGracePeriodValues",
        "Grace period value for the instance failover group must be greater than or equal to the '{0}' minutes minimum grace period";
    ifog_grace_required() => 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpointFields",
        "The property failoverWithDataLossGracePeriodMinutes must be provided when failover policy Automatic is selected for the read-write endpoint.";
    ifog_invalid_policy() => 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteFailoverPolicy",
        "The failoverPolicy field for the read-write endpoint is required for create or update requests.";
    ifog_grace_with_manual() => 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpointFieldsForManualPolicy",
        "Grace period value should not be provided when failover policy Manual is selected for the read-write endpoint.";
    ifog_read_only_property_modified(property) => 400, "InstanceFailoverGroupCreateOrUpdateRequestReadOnlyPropertyModified",
        "The create or update instance failover group request body should not modify the read-only property '{0}'.";
    ifog_failover_on_primary() => 400, "InstanceFailoverGroupFailoverRequestOnPrimary",
        "The failover request should be initiated on the secondary server of instance failover group.";
    invalid_target_subregion() => 400, "InvalidTargetSubregion",
        "The target server of a non-readable secondary is not in a DR paired Azure region.";
    region_mismatch() => 400, "FailoverGroupRegionMismatch",
        "Partner region specified in Failover Group need to match the region of the partner managed instance indicated.";
    edition_mismatch() => 400, "ServerEditionMismatch",
        "Edition must be the same as the primary server when creating a replica server.";
    dns_zone_mismatch() => 400, "DnsZoneMismatch",
        "The DNSZone on the partner server is different from the DNSZone on the source server. This breaks InstanceFailoverGroup functionality.";
    size_mismatch() => 400, "GeoDrInstanceSizeMismatch",
        "Primary managed instance and partner managed instance do not have the same storage size.";
    secondary_not_empty() => 400, "GeoDrSecondaryInstanceNotEmpty",
        "Secondary managed instance has user databases. To create an instance failover group the secondary managed instance needs to be empty.";
    incorrect_networking() => 400, "InstanceFailoverGroupIncorrectNetworkingConfiguration",
        "Networking configuration is incorrect. Primary server's replication traffic cannot reach secondary server.";
    same_region() => 400, "InvalidFailoverGroupRegion",
        "Servers specified in an Instance Failover Group need to reside in different regions to provide isolation.";
    ifog_does_not_exist() => 400, "InstanceFailoverGroupDoesNotExist",
        "Failover group does not exist on a server.";
    database_format_mismatch() => 400, "ManagedInstanceEstablishingFailoverGroupGeoPrimaryWithNewerVersionEditionThanSecondary",
        "Failover group cannot be created because database format of the primary instance is not compatible with the database format of the secondary instance. See https://go.microsoft.com/fwlink/?linkid=2251601 for more details.";
    ifog_already_exists() => 409, "InstanceFailoverGroupAlreadyExists",
        "Failover group already exists on a given server.";
    ifog_busy() => 409, "InstanceFailoverGroupBusy",
        "Instance failover group is busy with another operation.";
    ifog_dns_record_in_use() => 409, "InstanceFailoverGroupDnsRecordInUse",
        "A duplicate DNS record exists for the requested endpoint.";
    invalid_failover_group_name() => 409, "InvalidFailoverGroupName",
        "Invalid Instance Failover Group name was supplied.";
    planned_failover_timed_out() => 400, "PlannedFailoverTimedOut",
        "User invoked planned failover, and it timed out while trying to contact the partner management service.";
    incorrect_replication_link_state() => 400, "IncorrectReplicationLinkState",
        "The operation expects the database to be in an expected state on the replication link.";
    failover_format_mismatch() => 400, "ManagedInstanceFailoverInFailoverGroupInstancesWithDifferentVersionEditions",
        "Failover operation cannot be performed because of database format mismatch between the instances in the failover group. Consider upgrading the database format of the primary instance or deleting the failover group to promote current secondary instance to a stand-alone instance. See https://go.microsoft.com/fwlink/?linkid=2251601 for more details.";
    database_on_geo_secondary(instance, group) => 400, "DatabaseOperationOnGeoSecondaryNotAllowed",
        "Managed instance '{0}' is the geo-secondary of instance failover group '{1}': its databases are read-only replicas. Create or delete databases on the primary managed instance.";
    instance_in_failover_group(instance, group) => 409, "ManagedInstanceInFailoverGroup",
        "Managed instance '{0}' belongs to instance failover group '{1}'. Delete the failover group first.";
}

impl ArmError {
    /// The managed instance named in the path does not exist.
    pub fn managed_instance_not_found(name: &str, rg: &str) -> Self {
        Self::tracked_resource_not_found("Microsoft.Sql/managedInstances", name, rg)
    }

    /// The managed database named in the path does not exist.
    pub fn managed_database_not_found(name: &str) -> Self {
        Self::child_resource_not_found("Microsoft.Sql/managedInstances/databases", name)
    }

    /// An internal failure, reported without leaking internals into the message.
    pub fn internal(context: impl std::fmt::Display) -> Self {
        ArmError::new(
            500,
            "InternalServerError",
            format!("An internal error occurred: {context}."),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_in_order() {
        let e = ArmError::invalid_api_version("1999-01-01", "2025-01-01");
        assert_eq!(e.status, 400);
        assert_eq!(e.code, "InvalidApiVersionParameter");
        assert_eq!(
            e.message,
            "The api-version '1999-01-01' is invalid. The supported versions are '2025-01-01'."
        );
    }

    #[test]
    fn envelope_omits_absent_target_and_status() {
        let v = ArmError::invalid_sku().envelope();
        assert_eq!(v["error"]["code"], "InvalidSku");
        assert!(v["error"].get("target").is_none());
        assert!(v["error"].get("status").is_none());
        let v = ArmError::invalid_sku().with_target("sku.name").envelope();
        assert_eq!(v["error"]["target"], "sku.name");
    }
}
