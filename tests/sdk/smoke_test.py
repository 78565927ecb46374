#!/usr/bin/env python3
"""End-to-end smoke test of fogd through the real Azure Python SDK.

Drives a running fogd with ``azure-mgmt-sql`` 4.0.0 (api-version 2025-01-01):
managed instance create/get/list/delete, managed database create/get/list/
delete, and the not-found / reserved-name error paths.

    python smoke_test.py --base-url https://127.0.0.1:PORT --ca /path/ca.pem \
        --token TOKEN --subscription SUBID

Exit status 0 when every step passed, 1 on the first failure (the failing step
and the reason are printed). Install the SDK with tests/sdk/setup_venv.sh.
"""

import argparse
import logging
import os
import sys
import time
import traceback
import uuid

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.sql import SqlManagementClient
from azure.mgmt.sql.models import ManagedDatabase, ManagedInstance, Sku

LOCATION = "eastus"
ADMIN_LOGIN = "fogadmin"
ADMIN_PASSWORD = "S0me-Str0ng-Pass!"
DB_NAME = "appdb"
RESERVED_DB_NAME = "postgres"


class StaticTokenCredential:
    """Minimal TokenCredential: the server sees ``Authorization: Bearer <token>``.

    Deliberately has no ``get_token_info``: azure-core prefers that method when
    it exists, and it would have to return an AccessTokenInfo.
    """

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, claims=None, tenant_id=None, enable_cae=False, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


class SmokeFailure(Exception):
    pass


_step_no = 0


def step(msg):
    global _step_no
    _step_no += 1
    print(f"[{_step_no:02d}] {msg}", flush=True)


def ok(msg=""):
    print(f"     ok{(' - ' + msg) if msg else ''}", flush=True)


def wait_lro(poller, what, limit, timeout=120.0):
    """Wait for an LROPoller, enforce the wall-time limit, return its result.

    ``poller.result(timeout)`` returns whatever the polling method holds when the
    timeout expires (not an error), so check ``done()`` explicitly.
    """
    start = poller._fog_start  # set by timed_begin()
    poller.wait(timeout=timeout)  # re-raises the poller thread's exception, if any
    if not poller.done():
        raise SmokeFailure(f"{what}: LRO not finished after {timeout:.0f}s (status={poller.status()!r})")
    result = poller.result()
    elapsed = time.monotonic() - start
    status = poller.status()
    assert str(status).lower() == "succeeded", f"{what}: LRO ended with status {status!r}"
    assert elapsed < limit, f"{what}: LRO took {elapsed:.1f}s (limit {limit:.0f}s)"
    ok(f"LRO {what} finished in {elapsed:.1f}s (status {_s(status)})")
    return result


def timed_begin(fn, *args, **kwargs):
    start = time.monotonic()
    poller = fn(*args, **kwargs)
    poller._fog_start = start
    return poller


def expect_not_found(fn, *args, what):
    try:
        got = fn(*args)
    except ResourceNotFoundError as e:
        code = e.error.code if e.error else None
        ok(f"{what}: ResourceNotFoundError (HTTP {e.status_code}, code {code})")
        return
    raise SmokeFailure(f"{what}: expected ResourceNotFoundError, got a result: {got!r}")


def names(items):
    return [(i.name or "").lower() for i in items]


def _s(v):
    """Plain string of an SDK enum member (str-enum formatting differs between Python versions)."""
    return getattr(v, "value", v)


def eq_ci(a, b):
    return (a or "").lower() == (b or "").lower()


def run(args):
    suffix = uuid.uuid4().hex[:8]
    rg = f"fog-smoke-rg-{suffix}"
    mi_name = f"fog-smoke-mi-{suffix}"  # lowercase letters, digits, hyphens; <= 63 chars
    missing_mi = f"fog-smoke-missing-{suffix}"
    sub = args.subscription
    limit = args.lro_limit

    verify = args.ca if args.ca else True
    if args.insecure:
        verify = False
    client = SqlManagementClient(
        StaticTokenCredential(args.token),
        sub,
        base_url=args.base_url.rstrip("/"),
        connection_verify=verify,
        polling_interval=1,  # fallback delay when the server sends no Retry-After
        retry_total=args.retry_total,
        logging_enable=args.http_log,
    )
    print(
        f"fogd smoke test: base_url={args.base_url} subscription={sub} "
        f"api-version={client._config.api_version} rg={rg} instance={mi_name}",
        flush=True,
    )
    created_mi = False
    created_db = False

    def cleanup():
        # best effort, only after a failure; never masks the original error
        todo = []
        if created_db:
            todo.append(("database", client.managed_databases.begin_delete, (rg, mi_name, DB_NAME)))
        if created_mi:
            todo.append(("instance", client.managed_instances.begin_delete, (rg, mi_name)))
        for what, fn, fargs in todo:
            try:
                p = fn(*fargs)
                p.wait(timeout=60)
                print(f"     cleanup after failure: deleted {what} ({p.status()})", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"     cleanup after failure: deleting {what} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)

    try:
        mi_path = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Sql/managedInstances/{mi_name}"

        # ---- managed instance: create ---------------------------------------------------------
        step(f"create managed instance {rg}/{mi_name} (PUT, LRO)")
        params = ManagedInstance(
            location=LOCATION,
            sku=Sku(name="GP_Gen5", tier="GeneralPurpose"),
            administrator_login=ADMIN_LOGIN,
            administrator_login_password=ADMIN_PASSWORD,
            v_cores=4,
            storage_size_in_gb=64,
        )
        poller = timed_begin(client.managed_instances.begin_create_or_update, rg, mi_name, params)
        created_mi = True
        mi = wait_lro(poller, "managed instance create", limit)
        check_instance(mi, mi_name, mi_path, "create result")
        ok(f"fqdn={mi.fully_qualified_domain_name}")

        # ---- managed instance: reads ----------------------------------------------------------
        step("get managed instance")
        mi = client.managed_instances.get(rg, mi_name)
        check_instance(mi, mi_name, mi_path, "get")
        ok()

        step(f"list managed instances in resource group {rg}")
        listed = names(client.managed_instances.list_by_resource_group(rg))
        assert mi_name in listed, f"list_by_resource_group({rg}) does not contain {mi_name}: {listed}"
        ok(f"{len(listed)} item(s)")

        step("list managed instances in subscription")
        listed = names(client.managed_instances.list())
        assert mi_name in listed, f"list() does not contain {mi_name} ({len(listed)} items)"
        ok(f"{len(listed)} item(s)")

        step(f"get missing managed instance {missing_mi}")
        expect_not_found(client.managed_instances.get, rg, missing_mi, what="get missing instance")

        # ---- managed database -----------------------------------------------------------------
        db_path = f"{mi_path}/databases/{DB_NAME}"
        step(f"create managed database {mi_name}/{DB_NAME} (PUT, LRO)")
        poller = timed_begin(
            client.managed_databases.begin_create_or_update, rg, mi_name, DB_NAME, ManagedDatabase(location=LOCATION)
        )
        created_db = True
        db = wait_lro(poller, "managed database create", limit)
        check_database(db, db_path, "create result", require_online=False)

        step("get managed database")
        db = client.managed_databases.get(rg, mi_name, DB_NAME)
        check_database(db, db_path, "get", require_online=True)
        ok(f"status={_s(db.status)}")

        step("list managed databases of the instance")
        listed = names(client.managed_databases.list_by_instance(rg, mi_name))
        assert DB_NAME in listed, f"list_by_instance does not contain {DB_NAME}: {listed}"
        ok(f"{listed}")

        step(f"create managed database with reserved name {RESERVED_DB_NAME!r} (expect CannotUseReservedDatabaseName)")
        expect_reserved_name_error(client, rg, mi_name, limit)

        # ---- deletes --------------------------------------------------------------------------
        step("delete managed database (DELETE, LRO)")
        poller = timed_begin(client.managed_databases.begin_delete, rg, mi_name, DB_NAME)
        res = wait_lro(poller, "managed database delete", limit)
        assert res is None, f"database delete returned {res!r}, expected None"
        created_db = False

        step("get deleted managed database")
        expect_not_found(client.managed_databases.get, rg, mi_name, DB_NAME, what="get deleted database")
        listed = names(client.managed_databases.list_by_instance(rg, mi_name))
        assert DB_NAME not in listed, f"list_by_instance still contains {DB_NAME}: {listed}"
        ok("not listed any more")

        step("delete managed instance (DELETE, LRO)")
        poller = timed_begin(client.managed_instances.begin_delete, rg, mi_name)
        res = wait_lro(poller, "managed instance delete", limit)
        assert res is None, f"instance delete returned {res!r}, expected None"
        created_mi = False

        step("get deleted managed instance")
        expect_not_found(client.managed_instances.get, rg, mi_name, what="get deleted instance")
        listed = names(client.managed_instances.list_by_resource_group(rg))
        assert mi_name not in listed, f"list_by_resource_group still contains {mi_name}: {listed}"
        ok("not listed any more")
    except BaseException:
        if not args.no_cleanup and (created_mi or created_db):
            try:
                cleanup()
            except BaseException:  # noqa: BLE001
                pass
        raise
    finally:
        client.close()


def check_instance(mi, mi_name, mi_path, what):
    assert mi is not None, f"{what}: no managed instance returned"
    assert mi.name == mi_name, f"{what}: name {mi.name!r} != {mi_name!r}"
    assert eq_ci(mi.id, mi_path), f"{what}: id {mi.id!r} != {mi_path!r} (case-insensitive)"
    assert eq_ci(mi.type, "Microsoft.Sql/managedInstances"), f"{what}: type {mi.type!r}"
    assert mi.location == LOCATION, f"{what}: location {mi.location!r} != {LOCATION!r}"
    assert mi.properties is not None, f"{what}: no properties in the body"
    assert mi.provisioning_state == "Succeeded", f"{what}: provisioningState {mi.provisioning_state!r} != 'Succeeded'"
    fqdn = mi.fully_qualified_domain_name
    assert fqdn, f"{what}: fullyQualifiedDomainName is empty"
    assert fqdn.lower().startswith(mi_name + "."), f"{what}: fullyQualifiedDomainName {fqdn!r} does not start with '{mi_name}.'"
    assert mi.administrator_login == ADMIN_LOGIN, f"{what}: administratorLogin {mi.administrator_login!r}"
    assert mi.administrator_login_password is None, f"{what}: administratorLoginPassword was returned"
    assert ADMIN_PASSWORD not in repr(dict(mi)), f"{what}: the admin password appears in the response body"


def check_database(db, db_path, what, require_online):
    assert db is not None, f"{what}: no managed database returned"
    assert db.name == DB_NAME, f"{what}: name {db.name!r} != {DB_NAME!r}"
    assert eq_ci(db.id, db_path), f"{what}: id {db.id!r} != {db_path!r} (case-insensitive)"
    assert eq_ci(db.type, "Microsoft.Sql/managedInstances/databases"), f"{what}: type {db.type!r}"
    if require_online:
        assert db.status == "Online", f"{what}: status {db.status!r} != 'Online'"


def expect_reserved_name_error(client, rg, mi_name, limit):
    # The server may reject synchronously (400 on the PUT, raised by begin_*) or
    # fail the LRO (status resource "Failed", raised by wait()); accept both.
    where = "synchronous"
    try:
        poller = timed_begin(
            client.managed_databases.begin_create_or_update,
            rg,
            mi_name,
            RESERVED_DB_NAME,
            ManagedDatabase(location=LOCATION),
        )
        where = "LRO"
        poller.wait(timeout=120)
        if not poller.done():
            raise SmokeFailure("reserved-name create: LRO neither failed nor finished after 120s")
        got = poller.result()
    except ResourceNotFoundError as e:
        raise SmokeFailure(f"reserved-name create: got ResourceNotFoundError (HTTP {e.status_code}): {e}") from e
    except HttpResponseError as e:
        code = e.error.code if e.error else None
        assert code == "CannotUseReservedDatabaseName", (
            f"reserved-name create: error code {code!r} != 'CannotUseReservedDatabaseName' "
            f"(HTTP {e.status_code}, {where}): {str(e).splitlines()[0] if str(e) else ''}"
        )
        ok(f"{type(e).__name__} ({where}, HTTP {e.status_code}, code {code})")
        return
    raise SmokeFailure(f"reserved-name create: expected HttpResponseError, got success: {got!r}")


def props(resource):
    """The `properties` of a 4.x model (flattened attribute names as a fallback)."""
    return getattr(resource, "properties", None) or resource


def run_failover_groups(args):
    """Failover groups through the SDK: create (seeding), both views, list, planned and
    forced failover (200 final body from the Location URL), delete."""
    from azure.mgmt.sql.models import (
        InstanceFailoverGroup,
        InstanceFailoverGroupReadWriteEndpoint,
        ManagedInstancePairInfo,
        PartnerRegionInfo,
    )

    suffix = uuid.uuid4().hex[:8]
    rg = f"fog-smoke-fg-{suffix}"
    p_name, s_name, fg = f"fog-p-{suffix}", f"fog-s-{suffix}", f"fog-fg-{suffix}"
    limit = args.lro_limit
    client = SqlManagementClient(
        StaticTokenCredential(args.token),
        args.subscription,
        base_url=args.base_url.rstrip("/"),
        connection_verify=args.ca if args.ca else (not args.insecure),
        polling_interval=1,
        retry_total=args.retry_total,
    )
    step(f"create primary {p_name} (eastus) and secondary {s_name} (westus, same DNS zone)")
    primary = wait_lro(timed_begin(client.managed_instances.begin_create_or_update, rg, p_name, ManagedInstance(
        location="eastus", sku=Sku(name="GP_Gen5", tier="GeneralPurpose"), administrator_login="fogadmin",
        administrator_login_password=ADMIN_PASSWORD, v_cores=4, storage_size_in_gb=64)), "primary create", limit)
    secondary = wait_lro(timed_begin(client.managed_instances.begin_create_or_update, rg, s_name, ManagedInstance(
        location="westus", sku=Sku(name="GP_Gen5", tier="GeneralPurpose"), administrator_login="fogadmin",
        administrator_login_password=ADMIN_PASSWORD, v_cores=4, storage_size_in_gb=64,
        dns_zone_partner=primary.id)), "secondary create", limit)
    assert props(secondary).dns_zone == props(primary).dns_zone, "DNS zone copied from the partner"

    step(f"create instance failover group {fg} at eastus (PUT, LRO with seeding)")
    group = wait_lro(timed_begin(client.instance_failover_groups.begin_create_or_update, rg, "eastus", fg,
        InstanceFailoverGroup(
            read_write_endpoint=InstanceFailoverGroupReadWriteEndpoint(failover_policy="Manual"),
            partner_regions=[PartnerRegionInfo(location="westus")],
            managed_instance_pairs=[ManagedInstancePairInfo(
                primary_managed_instance_id=primary.id, partner_managed_instance_id=secondary.id)],
        )), "group create", limit)
    assert _s(props(group).replication_role) == "Primary", props(group).replication_role
    assert _s(props(group).partner_regions[0].replication_role) == "Secondary"

    step("get the group from the secondary's location; list by location")
    other = client.instance_failover_groups.get(rg, "westus", fg)
    assert _s(props(other).replication_role) == "Secondary", props(other).replication_role
    assert eq_ci(props(other).managed_instance_pairs[0].primary_managed_instance_id, primary.id)
    listed = list(client.instance_failover_groups.list_by_location(rg, "westus"))
    assert fg in names(listed), names(listed)
    ok(f"replicationState={props(other).replication_state}")

    step("planned failover to the secondary (POST failover, LRO; final body from Location)")
    after = wait_lro(timed_begin(client.instance_failover_groups.begin_failover, rg, "westus", fg), "failover", limit)
    assert _s(props(after).replication_role) == "Primary", props(after).replication_role
    assert eq_ci(props(after).managed_instance_pairs[0].primary_managed_instance_id, secondary.id)

    step("forced failover back (POST forceFailoverAllowDataLoss, LRO)")
    back = wait_lro(timed_begin(client.instance_failover_groups.begin_force_failover_allow_data_loss, rg, "eastus", fg),
                    "force failover", limit)
    assert _s(props(back).replication_role) == "Primary"
    assert eq_ci(props(back).managed_instance_pairs[0].primary_managed_instance_id, primary.id)

    step("failover requested at the primary is refused")
    try:
        client.instance_failover_groups.begin_failover(rg, "eastus", fg).result()
        raise SmokeFailure("failover at the primary succeeded")
    except HttpResponseError as e:
        code = e.error.code if e.error else None
        assert code == "InstanceFailoverGroupFailoverRequestOnPrimary", code
        ok(f"HTTP {e.status_code} {code}")

    step("delete the group, then both instances")
    wait_lro(timed_begin(client.instance_failover_groups.begin_delete, rg, "eastus", fg), "group delete", limit)
    expect_not_found(client.instance_failover_groups.get, rg, "eastus", fg, what="get deleted group")
    for name in (s_name, p_name):
        wait_lro(timed_begin(client.managed_instances.begin_delete, rg, name), f"delete {name}", limit)


def main(argv=None):
    ap = argparse.ArgumentParser(description="fogd smoke test through azure-mgmt-sql")
    ap.add_argument("--base-url", required=True, help="e.g. https://127.0.0.1:8443")
    ap.add_argument("--ca", help="PEM file of the CA (or server certificate) to trust")
    ap.add_argument("--insecure", action="store_true", help="disable TLS verification (instead of --ca)")
    ap.add_argument("--token", required=True, help="bearer token the server accepts")
    ap.add_argument("--subscription", required=True, help="subscription id (GUID)")
    ap.add_argument("--lro-limit", type=float, default=60.0, help="max seconds per LRO (default 60)")
    ap.add_argument("--retry-total", type=int, default=3, help="azure-core retry_total (SDK default 10)")
    ap.add_argument("--http-log", action="store_true", help="log HTTP requests/responses (azure logger, stderr)")
    ap.add_argument("--no-cleanup", action="store_true", help="keep resources after a failure")
    args = ap.parse_args(argv)

    if not args.base_url.lower().startswith("https://"):
        print("FAIL: --base-url must be https:// (the SDK refuses bearer tokens over plain http)", file=sys.stderr)
        return 2
    if args.ca and not os.path.isfile(args.ca):
        print(f"FAIL: --ca {args.ca!r} is not a file", file=sys.stderr)
        return 2
    if args.http_log:
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        logging.getLogger("azure").setLevel(logging.DEBUG)

    t0 = time.monotonic()
    try:
        run(args)
        run_failover_groups(args)
    except (AssertionError, SmokeFailure) as e:
        print(f"FAIL (step {_step_no}): {e}", flush=True)
        return 1
    except HttpResponseError as e:
        print(f"FAIL (step {_step_no}): unexpected {type(e).__name__} (HTTP {e.status_code}): {e}", flush=True)
        return 1
    except Exception as e:  # noqa: BLE001
        print(f"FAIL (step {_step_no}): unexpected {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
        return 1
    print(f"PASS: {_step_no} steps in {time.monotonic() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
