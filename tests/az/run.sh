#!/usr/bin/env bash
# Azure CLI (az 2.91.0, from PyPI) against a real fogd, signed in as a service principal:
# cloud register, login, resource groups, managed instances, databases, an instance
# failover group with a planned and a forced failover, deletes, and `az login --identity`.
# Every step asserts on az's answer; the script ends with "N passed, M failed" and exits 1
# on any failure (printing fogd's log tail).
#
#   tests/az/run.sh            # builds fogd and fogctl (debug, --all-features) if needed
#
# The virtualenv is cached in $AZ_VENV (default <repo>/.cache/az-venv, gitignored):
# the first run installs azure-cli==2.91.0 into it (about a minute on a warm pip cache;
# the time is printed), later runs only check the version.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
AZ_VERSION=2.91.0
venv="${AZ_VENV:-$repo/.cache/az-venv}"

# ---- az in a virtualenv --------------------------------------------------------------
if ! "$venv/bin/az" version --query '"azure-cli"' -o tsv 2>/dev/null | grep -qx "$AZ_VERSION"; then
  started=$(date +%s)
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "azure-cli==$AZ_VERSION"
  echo "az: installed azure-cli $AZ_VERSION into $venv in $(( $(date +%s) - started )) s"
fi
az="$venv/bin/az"

# ---- a real fogd --------------------------------------------------------------------
cargo build -q --all-features -p fogd -p fogctl
work=$(mktemp -d /tmp/fogd-az.XXXXXX)
chmod 755 "$work"
data="$work/data"
./target/debug/fogd serve --data-dir "$data" --listen 127.0.0.1:0 >"$work/fogd.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 300); do [ -s "$data/api-url" ] && break; sleep 0.1; done
if ! [ -s "$data/api-url" ]; then cat "$work/fogd.log"; exit 1; fi
url=$(cat "$data/api-url")
sub=$(cat "$data/subscription-id")
tenant=$(cat "$data/tenant-id")
fogctl() { "$repo/target/debug/fogctl" --data-dir "$data" "$@"; }

# az's own state stays in the work directory; fogd's CA is the one to trust.
export AZURE_CONFIG_DIR="$work/az" REQUESTS_CA_BUNDLE="$data/ca.pem"
export AZURE_CORE_COLLECT_TELEMETRY=false AZURE_CORE_NO_COLOR=true AZURE_CORE_ONLY_SHOW_ERRORS=true

passed=0 failed=0
# check DESCRIPTION EXPECTED ACTUAL
check() {
  if [ "$2" = "$3" ]; then
    passed=$((passed + 1)); echo "ok   $1"
  else
    failed=$((failed + 1)); echo "FAIL $1: expected '$2', got '$3'"
  fi
}
# az ARGS…: az's stdout, with its stderr in the work dir; never stops the script.
run() { "$az" "$@" 2>"$work/az.err" || { echo "  az $* failed: $(tail -3 "$work/az.err")" >&2; return 0; }; }
# flat: az's tsv lines and columns on one line, separated by single spaces.
flat() { tr '\t\n' '  ' | sed 's/ *$//'; }
# fails ARGS…: "failed" when az exits non-zero, "succeeded" otherwise.
fails() { if "$az" "$@" >/dev/null 2>"$work/az.err"; then echo succeeded; else echo failed; fi; }

t0=$(date +%s)
echo "== az $AZ_VERSION against fogd at $url"

# ---- sign in -------------------------------------------------------------------------
run cloud register -n fogd --endpoint-resource-manager "$url/" -o none
run cloud set -n fogd -o none
check "cloud register reads the login endpoint" "$url/adfs" "$(run cloud show -n fogd --query endpoints.activeDirectory -o tsv)"
sp=$(fogctl ad sp create-for-rbac --name az-ci)
app=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["appId"])' <<<"$sp")
secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["password"])' <<<"$sp")
check "create-for-rbac names the tenant" "$tenant" "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tenant"])' <<<"$sp")"
check "login with a wrong secret is refused" failed "$(fails login --service-principal -u "$app" -p wrong-secret --tenant "$tenant")"
run login --service-principal -u "$app" -p "$secret" --tenant "$tenant" -o none
check "login: the subscription" "$sub" "$(run account show --query id -o tsv)"
check "login: the tenant" "$tenant" "$(run account show --query tenantId -o tsv)"
check "login: as the service principal" "$app servicePrincipal" "$(run account show --query '[user.name, user.type]' -o tsv | flat)"

# ---- resource groups -----------------------------------------------------------------
check "group create" "Succeeded" "$(run group create -n az-east -l eastus --query properties.provisioningState -o tsv)"
check "group create (partner)" "westus" "$(run group create -n az-west -l westus --query location -o tsv)"
check "group show" "eastus" "$(run group show -n az-east --query location -o tsv)"
check "group list" "az-east az-west" "$(run group list --query "sort([?starts_with(name,'az-')].name)" -o tsv | flat)"

# ---- managed instances ---------------------------------------------------------------
subnet() { echo "/subscriptions/$sub/resourceGroups/$1/providers/Microsoft.Network/virtualNetworks/vnet/subnets/mi"; }
check "sql mi create" "Ready 4" "$(run sql mi create -g az-east -n az-mi-a -l eastus -u fogadmin -p 'Az-Cli-Passw0rd-1234' \
  --subnet "$(subnet az-east)" --capacity 4 --storage 32GB --yes --query '[state, vCores]' -o tsv | flat)"
mi_a=$(run sql mi show -g az-east -n az-mi-a --query id -o tsv)
check "sql mi create (partner, sharing the DNS zone)" "Ready" "$(run sql mi create -g az-west -n az-mi-b -l westus -u fogadmin -p 'Az-Cli-Passw0rd-1234' \
  --subnet "$(subnet az-west)" --capacity 4 --storage 32GB --dns-zone-partner "$mi_a" --yes --query state -o tsv)"
check "sql mi show" "GP_Gen5 GeneralPurpose" "$(run sql mi show -g az-east -n az-mi-a --query '[sku.name, sku.tier]' -o tsv | flat)"
check "sql mi update --capacity" "8" "$(run sql mi update -g az-east -n az-mi-a --capacity 8 --query vCores -o tsv)"
check "sql mi update --tier --family (capabilities)" "GP_Gen5 8" "$(run sql mi update -g az-east -n az-mi-a --tier GeneralPurpose --family Gen5 --query '[sku.name, vCores]' -o tsv | flat)"
check "sql mi list" "az-mi-a az-mi-b" "$(run sql mi list --query "sort([?starts_with(name,'az-mi')].name)" -o tsv | flat)"
check "sql mi list -g" "az-mi-b" "$(run sql mi list -g az-west --query '[].name' -o tsv)"

# ---- databases -----------------------------------------------------------------------
check "sql midb create" "Online" "$(run sql midb create -g az-east --mi az-mi-a -n appdb --query status -o tsv)"
check "sql midb list" "appdb" "$(run sql midb list -g az-east --mi az-mi-a --query '[].name' -o tsv)"

# ---- an instance failover group ------------------------------------------------------
fog=az-fog-$$
check "instance-failover-group create" "Primary Manual" "$(run sql instance-failover-group create -g az-east -n "$fog" --mi az-mi-a \
  --partner-mi az-mi-b --partner-resource-group az-west --failover-policy Manual \
  --query '[replicationRole, readWriteEndpoint.failoverPolicy]' -o tsv | flat)"
check "instance-failover-group show (secondary side)" "Secondary" "$(run sql instance-failover-group show -g az-west -l westus -n "$fog" --query replicationRole -o tsv)"
check "instance-failover-group update" "Automatic 60" "$(run sql instance-failover-group update -g az-east -l eastus -n "$fog" \
  --failover-policy Automatic --grace-period 1 \
  --query '[readWriteEndpoint.failoverPolicy, readWriteEndpoint.failoverWithDataLossGracePeriodMinutes]' -o tsv | flat)"
# A planned failover waits for the secondary to catch up; seeding must be over.
for _ in $(seq 1 120); do
  [ "$(run sql instance-failover-group show -g az-east -l eastus -n "$fog" --query replicationState -o tsv)" = CATCH_UP ] && break
  sleep 1
done
check "instance-failover-group set-primary (planned)" "Primary eastus" "$(run sql instance-failover-group set-primary -g az-west -l westus -n "$fog" \
  --query '[replicationRole, partnerRegions[0].location]' -o tsv | flat)"
check "after the planned failover az-mi-a is the secondary" "Secondary" "$(run sql instance-failover-group show -g az-east -l eastus -n "$fog" --query replicationRole -o tsv)"
check "instance-failover-group set-primary --allow-data-loss" "Primary" "$(run sql instance-failover-group set-primary -g az-east -l eastus -n "$fog" --allow-data-loss --query replicationRole -o tsv)"
check "after the forced failover az-mi-b is the secondary" "Secondary" "$(run sql instance-failover-group show -g az-west -l westus -n "$fog" --query replicationRole -o tsv)"
run sql instance-failover-group delete -g az-east -l eastus -n "$fog" -o none
check "instance-failover-group delete" failed "$(fails sql instance-failover-group show -g az-east -l eastus -n "$fog")"

# ---- deletes -------------------------------------------------------------------------
run sql midb delete -g az-east --mi az-mi-a -n appdb --yes -o none
check "sql midb delete" "0" "$(run sql midb list -g az-east --mi az-mi-a --query 'length(@)' -o tsv)"
check "group delete refuses a group that holds instances" failed "$(fails group delete -n az-west --yes)"
run sql mi delete -g az-west -n az-mi-b --yes -o none
run sql mi delete -g az-east -n az-mi-a --yes -o none
check "sql mi delete" "0" "$(run sql mi list --query "length([?starts_with(name,'az-mi')])" -o tsv)"
run group delete -n az-west --yes -o none
check "group delete" "az-east" "$(run group list --query "[?starts_with(name,'az-')].name" -o tsv)"

# ---- az login --identity (the App Service–style managed-identity endpoint) ------------
export AZURE_CONFIG_DIR="$work/az-identity"
run cloud register -n fogd --endpoint-resource-manager "$url/" -o none
run cloud set -n fogd -o none
check "login --identity with a wrong IDENTITY_HEADER is refused" failed "$(IDENTITY_ENDPOINT="$url/msi/token" IDENTITY_HEADER=wrong fails login --identity)"
export IDENTITY_ENDPOINT="$url/msi/token" IDENTITY_HEADER="$(cat "$data/identity-header")"
run login --identity -o none
check "login --identity" "MSI $sub" "$(run account show --query '[user.assignedIdentityInfo, id]' -o tsv | flat)"
check "an ARM call as the managed identity" "az-east" "$(run group list --query "[?starts_with(name,'az-')].name" -o tsv)"

echo "az test took $(( $(date +%s) - t0 )) s"
echo "$passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
  echo "fogd log (tail):"; tail -40 "$work/fogd.log"
  exit 1
fi
