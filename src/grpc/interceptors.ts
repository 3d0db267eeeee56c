import * as grpc from '@grpc/grpc-js';
import { ERROR_CODE_KEY, ERROR_DETAILS_KEY } from './errors.js';

/**
 * Requests grpc-js refuses itself, before any handler runs, with INTERNAL: they are the client's
 * fault, so they answer INVALID_ARGUMENT with an `error-code` like every other bad request.
 */
const CLIENT_FAULTS: ReadonlyArray<{ details: RegExp; code: string }> = [
  { details: /^Failed to decompress message/, code: 'MALFORMED_MESSAGE' },
  { details: /^Invalid grpc-timeout value/, code: 'INVALID_TIMEOUT' },
];

type Status = Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0];

function asClientFault(status: Status): Status {
  if (status.code !== grpc.status.INTERNAL) return status;
  const fault = CLIENT_FAULTS.find((f) => f.details.test(status.details ?? ''));
  if (!fault) return status;
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_KEY, fault.code);
  metadata.set(ERROR_DETAILS_KEY, '{}');
  return { code: grpc.status.INVALID_ARGUMENT, details: status.details, metadata };
}

/**
 * The first interceptor receives grpc-js's base call, whose own refusals (a compressed frame that
 * does not decompress, an unparsable grpc-timeout) go through its `sendStatus`: wrapping that
 * method is the one place every status of the call passes.
 */
export const clientFaultStatuses: grpc.ServerInterceptor = (_method, call) => {
  const send = call.sendStatus.bind(call);
  call.sendStatus = (status) => send(asClientFault(status));
  return new grpc.ServerInterceptingCall(call);
};
