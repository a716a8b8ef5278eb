module github.com/herd-metal/herd/services/bmc

go 1.26.0

require (
	github.com/bougou/go-ipmi v0.7.2
	github.com/stmcginnis/gofish v0.20.0
)

require (
	github.com/google/uuid v1.1.2 // indirect
	github.com/kr/pretty v0.3.0 // indirect
	github.com/kr/text v0.2.0 // indirect
	github.com/mattn/go-runewidth v0.0.9 // indirect
	github.com/olekukonko/tablewriter v0.0.5 // indirect
	github.com/rogpeppe/go-internal v1.6.1 // indirect
	golang.org/x/net v0.0.0-20210813160813-60bc85c4be6d // indirect
)
