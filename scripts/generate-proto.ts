// Generates the TypeScript types of the gRPC API from proto/ with protoc and ts-proto into
// src/generated/proto. `npm run proto`; test/grpc/generated-proto.test.ts fails when the committed
// files differ. grpc-js and @grpc/proto-loader still do the wire work: the options below make the
// types describe exactly what proto-loader's LOADER_OPTIONS hand out (camelCase fields, 64-bit
// integers as numbers, enums as their names, proto3 `optional` fields as optional properties).
import { execFileSync } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { PROJECT_ROOT } from '../src/paths.js';

export const GENERATED_PROTO_DIR = path.join(PROJECT_ROOT, 'src', 'generated', 'proto');
const PROTO_ROOT = path.join(PROJECT_ROOT, 'proto');
const SOURCES = ['protoprune/v1/protoprune.proto'];
const PLUGIN = path.join(PROJECT_ROOT, 'node_modules', '.bin', 'protoc-gen-ts_proto');
const TS_PROTO_OPTIONS = [
  'onlyTypes=true',
  'outputServices=false',
  'annotateFilesWithVersion=false',
  'forceLong=number',
  'stringEnums=true',
  'enumsAsLiterals=true',
  'unrecognizedEnum=false',
  'useOptionals=none',
  'importSuffix=.js',
];

export const PROTOC_MISSING =
  'protoc (the Protocol Buffers compiler) is not installed: install it with `sudo apt-get install -y protobuf-compiler` ' +
  '(CI installs it in .ci/run), then run `npm run proto`';

/** Writes the generated files under `outDir` (emptied first). Throws PROTOC_MISSING when protoc is absent. */
export async function generateProto(outDir: string): Promise<void> {
  try {
    execFileSync('protoc', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error(PROTOC_MISSING);
  }
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });
  execFileSync(
    'protoc',
    [`--plugin=protoc-gen-ts_proto=${PLUGIN}`, `--ts_proto_out=${outDir}`, `--ts_proto_opt=${TS_PROTO_OPTIONS.join(',')}`, `-I${PROTO_ROOT}`, ...SOURCES],
    { cwd: PROJECT_ROOT, stdio: ['ignore', 'inherit', 'inherit'] },
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  await generateProto(GENERATED_PROTO_DIR);
  console.log(`wrote ${path.relative(process.cwd(), GENERATED_PROTO_DIR)}`);
}
