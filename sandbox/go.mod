module github.com/herd-metal/herd/sandbox

go 1.26.0

require (
	github.com/insomniacslk/dhcp v0.0.0-20260901064844-234b97448fae
	github.com/vishvananda/netlink v1.3.1
	golang.org/x/sys v0.49.0
)

require (
	github.com/grpc-ecosystem/grpc-gateway/v2 v2.33.0 // indirect
	github.com/josharian/native v1.1.0 // indirect
	github.com/lib/pq v1.12.3 // indirect
	github.com/mdlayher/packet v1.1.2 // indirect
	github.com/mdlayher/socket v0.4.1 // indirect
	github.com/pierrec/lz4/v4 v4.1.14 // indirect
	github.com/u-root/uio v0.0.0-20230220225925-ffce2a382923 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20261026165753-2ffab32bce7e // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261019180522-ce908d29299b // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

require (
	github.com/herd-metal/herd/pkg v0.0.0
	github.com/herd-metal/herd/proto v0.0.0
	golang.org/x/crypto v0.58.0
	golang.org/x/sync v0.25.0
	google.golang.org/grpc v1.85.0
)

replace (
	github.com/herd-metal/herd/pkg => ../pkg
	github.com/herd-metal/herd/proto => ../proto
)
