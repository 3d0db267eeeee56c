import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import path from 'node:path';
import { LOADER_OPTIONS, PROTO_FILE } from '../../src/grpc/proto.js';
import { PROJECT_ROOT } from '../../src/paths.js';

/** A plain grpc-js client of protoprune.v1.Protoprune (what any Node client would write), with promise helpers. */
export type Msg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface CallFailure {
  code: grpc.status;
  details: string;
  errorCode: string | undefined;
  errorDetails: Record<string, unknown> | undefined;
  metadata: grpc.Metadata;
}

function failure(error: grpc.ServiceError): CallFailure {
  const [code] = error.metadata?.get('error-code') ?? [];
  const [details] = error.metadata?.get('error-details') ?? [];
  return {
    code: error.code,
    details: error.details,
    errorCode: code as string | undefined,
    errorDetails: details ? JSON.parse(details as string) : undefined,
    metadata: error.metadata,
  };
}

export class ApiClient {
  readonly raw: grpc.Client & Record<string, (...args: any[]) => any>; // eslint-disable-line @typescript-eslint/no-explicit-any

  constructor(port: number, private readonly key: string | undefined) {
    const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
    const Service = grpc.loadPackageDefinition(definition).protoprune as unknown as { v1: { Protoprune: grpc.ServiceClientConstructor } };
    this.raw = new Service.v1.Protoprune(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as ApiClient['raw'];
  }

  withKey(key: string | undefined): ApiClient {
    return Object.assign(Object.create(ApiClient.prototype) as ApiClient, { raw: this.raw, key });
  }

  metadata(): grpc.Metadata {
    const m = new grpc.Metadata();
    if (this.key !== undefined) m.set('authorization', `Bearer ${this.key}`);
    return m;
  }

  unary(method: string, request: Msg): Promise<Msg> {
    return new Promise((resolve, reject) =>
      this.raw[method](request, this.metadata(), (error: grpc.ServiceError | null, response: Msg) => (error ? reject(error) : resolve(response))),
    );
  }

  /** The call's failure (rejects if it succeeded). */
  async fails(method: string, request: Msg): Promise<CallFailure> {
    try {
      await this.unary(method, request);
    } catch (error) {
      return failure(error as grpc.ServiceError);
    }
    throw new Error(`${method} succeeded but was expected to fail`);
  }

  /** Every message of a server stream. */
  stream(method: string, request: Msg): Promise<Msg[]> {
    return new Promise((resolve, reject) => {
      const call = this.raw[method](request, this.metadata()) as grpc.ClientReadableStream<Msg>;
      const messages: Msg[] = [];
      call.on('data', (m: Msg) => messages.push(m));
      call.on('error', reject);
      call.on('end', () => resolve(messages));
    });
  }

  async streamFails(method: string, request: Msg): Promise<CallFailure> {
    try {
      await this.stream(method, request);
    } catch (error) {
      return failure(error as grpc.ServiceError);
    }
    throw new Error(`${method} succeeded but was expected to fail`);
  }

  /** Sends `messages` as a client stream and returns the single answer. */
  ingest(messages: Msg[]): Promise<Msg> {
    return new Promise((resolve, reject) => {
      const call = this.raw.IngestItems(this.metadata(), (error: grpc.ServiceError | null, response: Msg) =>
        error ? reject(error) : resolve(response),
      ) as grpc.ClientWritableStream<Msg>;
      for (const m of messages) call.write(m);
      call.end();
    });
  }

  async ingestFails(messages: Msg[]): Promise<CallFailure> {
    try {
      await this.ingest(messages);
    } catch (error) {
      return failure(error as grpc.ServiceError);
    }
    throw new Error('IngestItems succeeded but was expected to fail');
  }

  close(): void {
    this.raw.close();
  }
}

/** The service names a server lists through reflection (grpc.reflection.v1). */
export function listServicesByReflection(port: number): Promise<string[]> {
  const file = path.join(PROJECT_ROOT, 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto');
  const definition = protoLoader.loadSync(file, { keepCase: true });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    ServerReflectionInfo(): grpc.ClientDuplexStream<Msg, Msg>;
  };
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo();
    call.on('data', (response: Msg) => {
      call.end();
      client.close();
      if (response.list_services_response) resolve(response.list_services_response.service.map((s: Msg) => s.name));
      else reject(new Error(`unexpected reflection answer ${JSON.stringify(response)}`));
    });
    call.on('error', reject);
    call.write({ host: '', list_services: '*' });
  });
}

/** Float32 values as little-endian bytes (the embedding_f32le encoding). */
export function f32le(values: ArrayLike<number>): Buffer {
  const out = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i], i * 4);
  return out;
}
