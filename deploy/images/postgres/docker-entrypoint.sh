#!/bin/sh
# herd/postgres's entrypoint. It takes the official postgres image's
# settings, so either image runs herd's stack with the same environment:
#
#	POSTGRES_PASSWORD  the superuser's password (required for a new cluster)
#	POSTGRES_USER      the superuser's name (default postgres)
#	POSTGRES_DB        a database created for it (default POSTGRES_USER)
#	PGDATA             the cluster (default /var/lib/postgresql/data)
#
# On an empty PGDATA it creates the cluster as user postgres (initdb,
# scram-sha-256 for every connection, UTF-8, locale C.UTF-8) and the
# database; then it execs postgres as user postgres with the container's
# command, which may be options alone: `-c listen_addresses=127.0.0.1 -p
# 5433`. Started as root, it first gives PGDATA and the socket directory to
# postgres. Any other command (`psql ...`, `sh`) runs as it is.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

die() {
	printf 'docker-entrypoint.sh: %s\n' "$*" >&2
	exit 1
}

# Only options: they are postgres's.
case ${1:-} in
-*) set -- postgres "$@" ;;
esac
[ "${1:-}" = postgres ] || exec "$@"

if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /run/postgresql
	# A volume made by another image may hold files of another uid.
	find "$PGDATA" /run/postgresql ! -user postgres -exec chown postgres:postgres {} +
	chmod 700 "$PGDATA"
	chmod 2775 /run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	[ -n "${POSTGRES_PASSWORD:-}" ] ||
		die "PGDATA $PGDATA holds no cluster and POSTGRES_PASSWORD is empty: set the superuser's password to create one"
	user=${POSTGRES_USER:-postgres}
	db=${POSTGRES_DB:-$user}
	printf 'docker-entrypoint.sh: creating the cluster in %s (superuser %s, database %s)\n' "$PGDATA" "$user" "$db" >&2
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	printf '%s\n' "$POSTGRES_PASSWORD" >"$tmp/pw"
	initdb --username="$user" --pwfile="$tmp/pw" --auth=scram-sha-256 \
		--encoding=UTF8 --locale=C.UTF-8 >"$tmp/initdb.log" 2>&1 ||
		{ cat "$tmp/initdb.log" >&2; die "initdb failed"; }
	# Every address, with the password (the command's listen_addresses
	# decides which are reached at all).
	printf '\n# herd/postgres: any address, with the password.\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
	printf "\n# herd/postgres: the command's -c listen_addresses=... wins.\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
	if [ "$db" != postgres ]; then
		# A server on a private socket only, for CREATE DATABASE.
		pg_ctl -D "$PGDATA" -w -s -o "-c listen_addresses='' -k $tmp" -l "$tmp/server.log" start ||
			{ cat "$tmp/server.log" >&2; die "the server did not start to create database $db"; }
		printf 'CREATE DATABASE :"db";\n' |
			PGPASSWORD=$POSTGRES_PASSWORD psql -X -q -v ON_ERROR_STOP=1 -v db="$db" -h "$tmp" -U "$user" -d postgres ||
			{ pg_ctl -D "$PGDATA" -w -s -m fast stop; die "creating database $db failed"; }
		pg_ctl -D "$PGDATA" -w -s -m fast stop
	fi
	rm -rf "$tmp"
	trap - EXIT
	echo "docker-entrypoint.sh: cluster ready" >&2
fi

exec "$@"
