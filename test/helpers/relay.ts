import net from 'node:net';

/** A TCP relay to Postgres that a test can cut (and restore), to make the database "go away" for real. */
export interface Relay {
  port: number;
  /** Stops accepting and destroys every relayed connection: the database is now unreachable. */
  cut(): void;
  /** Listens again on the same port: new connections reach the database. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startRelay(target: URL): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    cut() {
      server.close();
      for (const s of sockets) s.destroy();
    },
    restore: () => new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    }),
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        if (server.listening) server.close(() => resolve());
        else resolve();
      }),
  };
}

/** `url` pointed at the relay (same credentials, database and ?schema=). */
export function viaRelay(url: string, relay: Relay): string {
  const u = new URL(url);
  u.hostname = '127.0.0.1';
  u.port = String(relay.port);
  return u.toString();
}
