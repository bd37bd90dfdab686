// Module of the probe that the real-node tests run inside pods (see main.go, ../build.sh).
module kubetasks.dev/node/probe

go 1.24.0
