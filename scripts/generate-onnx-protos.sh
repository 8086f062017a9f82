#!/bin/bash
# Regenerates Sources/RecProtos/onnx/onnx.pb.swift, the swift-protobuf messages of ONNX's
# onnx.proto3 that `rec-dist export --format onnx` encodes. Run by hand when the proto changes;
# neither the build nor CI runs it (building swift-protobuf's plugin takes about 10 minutes).
#
#   scripts/generate-onnx-protos.sh [ONNX_CHECKOUT]
#
# With ONNX_CHECKOUT (a git clone of github.com/onnx/onnx), first copies onnx/onnx.proto3 at the
# pinned tag below into Sources/RecProtos/onnx/; without it, regenerates from the committed copy.
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-swift built from apple/swift-protobuf at
# the runtime's version (1.39.0): `swift build -c release --product protoc-gen-swift` in its
# checkout, then pass its path as PROTOC_GEN_SWIFT.
set -euo pipefail
ONNX_TAG=v1.22.0
ONNX_COMMIT=2bb50465112feca9003e1ed654d77f01ff1415ca
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/Sources/RecProtos/onnx"
plugin="${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}"
[ -x "$plugin" ] || { echo "protoc-gen-swift not found: set PROTOC_GEN_SWIFT to its path" >&2; exit 2; }
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 2; }

if [ $# -ge 1 ]; then
    [ "$(git -C "$1" rev-parse "$ONNX_TAG^{commit}")" = "$ONNX_COMMIT" ] \
        || { echo "$1: tag $ONNX_TAG is not commit $ONNX_COMMIT" >&2; exit 2; }
    git -C "$1" show "$ONNX_COMMIT:onnx/onnx.proto3" > "$out/onnx.proto3"
fi

protoc --plugin=protoc-gen-swift="$plugin" --proto_path="$out" \
    --swift_out="$out" --swift_opt=Visibility=Public "$out/onnx.proto3"
# The pin, where a reader of the generated code sees it.
generated="$out/onnx.pb.swift"
{ echo "// onnx.proto3 of onnx/onnx $ONNX_TAG (commit $ONNX_COMMIT), Apache-2.0."
  echo "// Regenerate with scripts/generate-onnx-protos.sh; do not edit."
  cat "$generated"; } > "$generated.tmp"
mv "$generated.tmp" "$generated"
echo "wrote $generated"
