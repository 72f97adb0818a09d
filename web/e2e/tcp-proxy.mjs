// @ts-check
// A TCP relay in front of the gateway that the test can cut: dropAll() destroys every open
// connection at once, as a network failure or a restarted proxy would, so the page sees its
// streams fail mid-way and has to reconnect.
import { connect, createServer } from "node:net";

/** @param {string} origin e.g. http://127.0.0.1:8080 */
export function tcpProxy(origin) {
  const target = new URL(origin);
  /** @type {Set<import("node:net").Socket>} */
  const open = new Set();
  let drops = 0;
  const server = createServer((client) => {
    const up = connect(Number(target.port), target.hostname);
    open.add(client);
    open.add(up);
    const done = () => {
      open.delete(client);
      open.delete(up);
      client.destroy();
      up.destroy();
    };
    client.on("error", done).on("close", done);
    up.on("error", done).on("close", done);
    client.pipe(up);
    up.pipe(client);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      const port = typeof a === "object" && a ? a.port : 0;
      resolve({
        origin: `http://127.0.0.1:${port}`,
        /** Cuts every connection open now; returns how many there were. */
        dropAll() {
          const n = open.size;
          for (const s of [...open]) s.destroy();
          drops++;
          return n;
        },
        get drops() {
          return drops;
        },
        close: () => new Promise((done) => server.close(() => done(undefined))),
      });
    }),
  );
}
