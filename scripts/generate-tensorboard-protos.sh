#!/bin/sh
# Regenerates Sources/RecProtos/tensorboard/*.pb.swift from the trimmed TensorBoard protos in
# protos/tensorboard/ (their header comments say which upstream commit they come from and what
# was removed). The generated code is committed; builds and CI never run this.
#
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-swift of the swift-protobuf version
# Package.swift resolves (1.39.0), e.g. built from a checkout of apple/swift-protobuf at that tag
# with `swift build -c release --product protoc-gen-swift`:
#   PROTOC_GEN_SWIFT=/path/to/swift-protobuf/.build/release/protoc-gen-swift scripts/generate-tensorboard-protos.sh
set -eu
cd "$(dirname "$0")/.."
plugin=${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}
if [ -z "$plugin" ] || [ ! -x "$plugin" ]; then
    echo "protoc-gen-swift not found: set PROTOC_GEN_SWIFT to its path (see this script's header)" >&2
    exit 1
fi
protoc --plugin=protoc-gen-swift="$plugin" \
    --proto_path=protos \
    --swift_opt=Visibility=Public --swift_opt=FileNaming=DropPath \
    --swift_out=Sources/RecProtos/tensorboard \
    protos/tensorboard/compat/proto/summary.proto protos/tensorboard/compat/proto/event.proto
echo "wrote Sources/RecProtos/tensorboard/event.pb.swift and summary.pb.swift"
