// Generates the TypeScript messages and service descriptors of proto/agentz/v1/*.proto (and the
// google/api annotations they import) into src/gen/ with protoc + protoc-gen-es (protobuf-es v2).
// The google.protobuf well-known types come from @bufbuild/protobuf/wkt, so they are not generated.
// Skips the work when src/gen/ is newer than every input proto and this script.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const root = resolve(web, "..");
const protoDir = join(root, "proto");
const googleapis =
  process.env.AZ_GOOGLEAPIS_DIR ??
  "/usr/share/gocode/src/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis";
const wktDir = process.env.AZ_WKT_DIR ?? "/usr/include";
const protoc = process.env.PROTOC ?? "protoc";
const out = join(web, "src", "gen");
const plugin = join(web, "node_modules", ".bin", "protoc-gen-es");

const agentzProtos = readdirSync(join(protoDir, "agentz", "v1"))
  .filter((f) => f.endsWith(".proto"))
  .sort()
  .map((f) => `agentz/v1/${f}`);
const googleProtos = ["google/api/annotations.proto", "google/api/http.proto"];

for (const [what, path] of [
  ["googleapis (google/api/annotations.proto)", join(googleapis, googleProtos[0])],
  ["the well-known types (google/protobuf/timestamp.proto)", join(wktDir, "google/protobuf/timestamp.proto")],
  ["protoc-gen-es (run npm ci first)", plugin],
]) {
  if (!existsSync(path)) {
    console.error(`gen: ${what} not found at ${path}`);
    process.exit(1);
  }
}

const inputs = [
  ...agentzProtos.map((p) => join(protoDir, p)),
  ...googleProtos.map((p) => join(googleapis, p)),
  fileURLToPath(import.meta.url),
  join(web, "node_modules", "@bufbuild", "protoc-gen-es", "package.json"),
];
const stamp = join(out, ".stamp");
const newest = Math.max(...inputs.map((p) => statSync(p).mtimeMs));
if (process.argv.includes("--force") === false && existsSync(stamp)) {
  const had = readFileSync(stamp, "utf8");
  if (statSync(stamp).mtimeMs >= newest && had === agentzProtos.join("\n")) process.exit(0);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const args = [
  `--plugin=protoc-gen-es=${plugin}`,
  `--es_out=${out}`,
  "--es_opt=target=ts,import_extension=none",
  "-I", protoDir,
  "-I", wktDir,
  "-I", googleapis,
  ...agentzProtos,
  ...googleProtos,
];
try {
  execFileSync(protoc, args, { stdio: "inherit" });
} catch {
  console.error(`gen: ${protoc} failed`);
  process.exit(1);
}
writeFileSync(stamp, agentzProtos.join("\n"));
const files = [];
/** @param {string} d */
const walk = (d) => {
  for (const e of readdirSync(d, { withFileTypes: true })) {
    if (e.isDirectory()) walk(join(d, e.name));
    else if (e.name.endsWith(".ts")) files.push(relative(web, join(d, e.name)));
  }
};
walk(out);
console.log(`gen: ${files.length} files in ${relative(web, out)}/`);
