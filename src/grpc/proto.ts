import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import path from 'node:path';
import { PROJECT_ROOT } from '../paths.js';

/** The protoprune API definition (package protoprune.v1). */
export const PROTO_FILE = path.join(PROJECT_ROOT, 'proto', 'protoprune', 'v1', 'protoprune.proto');

/**
 * How the server (and the tests' clients) map protobuf to JS: camelCase field names, 64-bit
 * integers as plain numbers (every count and version fits in 2^53), enums as their names, unset
 * scalars as their defaults (proto3 `optional` fields stay undefined when unset, so presence is
 * kept), and oneofs named.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const SERVICE_NAME = 'protoprune.v1.Protoprune';

/** The standard health service's definition, loaded beside ours only so reflection describes it too. */
export const HEALTH_PROTO_FILE = path.join(PROJECT_ROOT, 'proto', 'grpc', 'health', 'v1', 'health.proto');

/** Loads the API (and, for reflection, the health service) definitions. */
export function loadProtopruneDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync([PROTO_FILE, HEALTH_PROTO_FILE], LOADER_OPTIONS);
}

/** Set on a request message that failed to parse, with the parser's reason. */
export const MALFORMED_MESSAGE = Symbol('malformed request message');

/**
 * The service definition to register handlers against. A request that is not valid protobuf does
 * not fail inside grpc-js (which would answer INTERNAL): it reaches the handler marked
 * MALFORMED_MESSAGE, and the handler answers INVALID_ARGUMENT like any other bad request.
 */
export function protopruneService(definition: protoLoader.PackageDefinition): grpc.ServiceDefinition {
  const service = definition[SERVICE_NAME] as grpc.ServiceDefinition;
  const tolerant = Object.entries(service).map(([method, spec]) => [
    method,
    {
      ...spec,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return spec.requestDeserialize(bytes);
        } catch (error) {
          return { [MALFORMED_MESSAGE]: error instanceof Error ? error.message : 'undecodable' };
        }
      },
    },
  ]);
  return Object.fromEntries(tolerant) as grpc.ServiceDefinition;
}
