#!/bin/sh
# Regenerates the Go code and the OpenAPI document from the .proto files.
# Usage: proto/generate.sh OUTDIR   (OUTDIR=proto rewrites the committed code)
# The plugins are pinned here; protoc is Debian's protobuf-compiler.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
bin=${HERD_TOOLS_BIN:-$here/../.bin}
mkdir -p "$bin" "$out"
out=$(cd "$out" && pwd)
bin=$(cd "$bin" && pwd)

install() { # name module@version
	[ -x "$bin/$1.$3" ] && return 0
	GOBIN="$bin" GOFLAGS=-mod=mod GOWORK=off go install "$2@$3"
	mv "$bin/$1" "$bin/$1.$3"
}
install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go v1.36.12
install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.5.1
install protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway v2.33.0
install protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2 v2.33.0

command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler libprotobuf-dev" >&2; exit 1; }
cd "$here"
protoc -I . -I /usr/include \
	--plugin=protoc-gen-go="$bin/protoc-gen-go.v1.36.12" \
	--plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc.v1.5.1" \
	--plugin=protoc-gen-grpc-gateway="$bin/protoc-gen-grpc-gateway.v2.33.0" \
	--plugin=protoc-gen-openapiv2="$bin/protoc-gen-openapiv2.v2.33.0" \
	--go_out="$out" --go_opt=paths=source_relative \
	--go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
	--grpc-gateway_out="$out" --grpc-gateway_opt=paths=source_relative,grpc_api_configuration=gateway.yaml \
	--openapiv2_out="$out" --openapiv2_opt=grpc_api_configuration=gateway.yaml,allow_merge=true,merge_file_name=openapi,json_names_for_fields=false \
	hardware/hardware.proto template/template.proto workflow/workflow.proto machine/machine.proto
