# shellcheck shell=bash disable=SC2154 # $deploy, $env_file and fail come from setup.sh
# The stack's settings, sourced by setup.sh (and its tests): resolve_settings
# exports each one, write_compose_env writes them for docker-compose.
#
# A setting is its herd name, else its Tinkerbell v0.6 name (so a
# Tinkerbell envrc keeps working), else what an earlier setup.sh wrote to
# .env, else its default; a secret's default is a new random value, kept in
# .env from then on. Needs $deploy (this folder) and $env_file (the .env).

secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

# setting NAME TINKERBELL-NAME DEFAULT resolves and exports NAME.
setting() {
	local name=$1 tink=$2 def=$3 v
	v=${!name:-}
	[ -n "$v" ] || [ -z "$tink" ] || v=${!tink:-}
	[ -n "$v" ] || v=${previous[$name]:-}
	[ -n "$v" ] || v=$def
	case "$v" in *[$'\n'\$\ \'\"\#]*)
		fail "$name=$v: a space, quote, \$, # or newline is more than docker-compose's .env can hold" ;;
	esac
	export "${name?}=$v"
}

# resolved lists, in order, the settings docker-compose reads.
resolved=()
declare -A previous=()

resolve_settings() {
	local k v
	if [ -f "$env_file" ]; then
		while IFS='=' read -r k v; do
			case "$k" in HERD_*) previous[$k]=$v ;; esac
		done <"$env_file"
	fi
	s() { setting "$@"; resolved+=("$1"); }
	#  herd name             Tinkerbell v0.6 name          default
	s HERD_INTERFACE TINKERBELL_NETWORK_INTERFACE ""
	s HERD_HOST_IP TINKERBELL_HOST_IP ""
	s HERD_CIDR TINKERBELL_CIDR 24
	if [ -z "$HERD_INTERFACE" ] || [ -z "$HERD_HOST_IP" ]; then
		fail "HERD_INTERFACE and HERD_HOST_IP are not set: source the envrc first" \
			"deploy/generate-envrc.sh IFACE > envrc && source ./envrc   (IFACE: the provisioning network's interface)"
	fi
	s HERD_DHCP_MODE "" reservation
	s HERD_IPXE_PARAMS "" auto
	s HERD_DB_USER "" herd
	s HERD_DB_PASSWORD "" "$(secret)"
	s HERD_DB_NAME "" herd
	s HERD_DB_PORT "" 5432
	s HERD_AUTH_TOKEN TINKERBELL_TINK_PASSWORD "$(secret)"
	s HERD_SERVICE_TOKEN "" "$(secret)"
	s HERD_BMC_TOKEN "" "$(secret)"
	s HERD_REGISTRY_USER TINKERBELL_REGISTRY_USERNAME admin
	s HERD_REGISTRY_PASSWORD TINKERBELL_REGISTRY_PASSWORD "$(secret)"
	s HERD_GRPC_PORT "" 42113
	s HERD_HTTP_PORT "" 42114
	s HERD_METADATA_PORT "" 50061
	s HERD_BOOTS_HTTP_PORT "" 80
	s HERD_REGISTRY_PORT "" 5000
	s HERD_BMC_HTTP_PORT "" 42115
	s HERD_SOURCE_DIR "" "$(dirname "$deploy")"
	s HERD_VERSION "" "$(git -C "$HERD_SOURCE_DIR" describe --tags --always --dirty 2>/dev/null || echo dev)"
	s HERD_SERVER_IMAGE "" "herd/herd-server:$HERD_VERSION"
	s HERD_BOOTS_IMAGE "" "herd/herd-boots:$HERD_VERSION"
	s HERD_METADATA_IMAGE "" "herd/herd-metadata:$HERD_VERSION"
	s HERD_BMC_IMAGE "" "herd/herd-bmc:$HERD_VERSION"
	s HERD_DB_IMAGE "" "herd/postgres:$HERD_VERSION"
	s HERD_REGISTRY_IMAGE "" "herd/registry:$HERD_VERSION"
	s HERD_STATE_DIR "" "$deploy/state"
	s HERD_LOG_LEVEL "" info
	setting HERD_SKIP_NETWORKING TINKERBELL_SKIP_NETWORKING ""

	case "$HERD_DHCP_MODE" in reservation | proxy) ;; *) fail "HERD_DHCP_MODE=$HERD_DHCP_MODE: want reservation or proxy" ;; esac
	case "$HERD_IPXE_PARAMS" in on | off | auto) ;; *) fail "HERD_IPXE_PARAMS=$HERD_IPXE_PARAMS: want on, off or auto" ;; esac
	[[ "$HERD_HOST_IP" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || fail "HERD_HOST_IP=$HERD_HOST_IP is not an IPv4 address"
	if ! [[ "$HERD_CIDR" =~ ^[0-9]{1,2}$ ]] || [ "$HERD_CIDR" -lt 1 ] || [ "$HERD_CIDR" -gt 32 ]; then
		fail "HERD_CIDR=$HERD_CIDR: want a prefix length, 1 to 32 (24 for a /24)"
	fi
	for k in HERD_DB_PORT HERD_GRPC_PORT HERD_HTTP_PORT HERD_METADATA_PORT HERD_BOOTS_HTTP_PORT HERD_REGISTRY_PORT HERD_BMC_HTTP_PORT; do
		if ! [[ "${!k}" =~ ^[0-9]{1,5}$ ]] || [ "${!k}" -lt 1 ] || [ "${!k}" -gt 65535 ]; then
			fail "$k=${!k}: want a port, 1 to 65535"
		fi
	done
	case "$HERD_LOG_LEVEL" in debug | info | warn | error) ;; *) fail "HERD_LOG_LEVEL=$HERD_LOG_LEVEL: want debug, info, warn or error" ;; esac
	case "$HERD_STATE_DIR" in /*) ;; *) fail "HERD_STATE_DIR=$HERD_STATE_DIR: want an absolute path (docker-compose mounts it)" ;; esac
}

# write_compose_env writes the resolved settings to $env_file (mode 0600:
# it holds the secrets), where docker-compose reads them.
write_compose_env() {
	local k
	(
		umask 077
		{
			echo "# Written by deploy/setup.sh: the resolved settings docker-compose reads. Run setup.sh again after changing the envrc."
			for k in "${resolved[@]}"; do echo "$k=${!k}"; done
		} >"$env_file.tmp"
	)
	mv -f "$env_file.tmp" "$env_file"
}
