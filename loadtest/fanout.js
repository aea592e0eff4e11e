// fanout.js: CLIENTS streams on one collection while a writer PATCHes the
// leader at WRITE_RATE/s, through WRITE (default CONTROL: the router and
// HAProxy send writes to the leader; direct runs give the leader's URL); every client records write → update latency
// (sse_event_latency) from the time stamped into the written value.
//
//   CLIENTS (50), WRITE_RATE (20), DURATION (15s), WARMUP (3s: streams open before writes)
import http from 'k6/http';
import { check } from 'k6';
import sse from 'k6/x/sse';
import { collection, create, subscribe, target } from './lib.js';

const clients = Number(__ENV.CLIENTS || 50);
const duration = __ENV.DURATION || '15s';
const warmup = __ENV.WARMUP || '3s';
const seconds = (d) => Number(d.replace(/s$/, ''));
const writeURL = (__ENV.WRITE || '').replace(/\/$/, '');
const holdMs = (seconds(warmup) + seconds(duration) + 1) * 1000;

export const options = {
  scenarios: {
    clients: {
      executor: 'per-vu-iterations', vus: clients, iterations: 1,
      maxDuration: `${holdMs / 1000 + 10}s`, exec: 'client',
    },
    writer: {
      executor: 'constant-arrival-rate', rate: Number(__ENV.WRITE_RATE || 20), timeUnit: '1s',
      duration, startTime: warmup, preAllocatedVUs: 5, maxVUs: 50, exec: 'writer',
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    sse_event_latency: [`p(99)<${__ENV.P99_LATENCY_MS || 100}`],
  },
};

export function client() {
  const t = target();
  const id = create(t.control);
  if (id) subscribe(t.streaming, id, holdMs, { latencyField: 'ts' });
}

export function writer() {
  const body = JSON.stringify([['ts', [{ ts: sse.now() }]]]);
  const res = http.patch(`${writeURL || target().control}/v1/inputs/${collection}`, body, {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'write' },
  });
  check(res, { 'written (200)': (r) => r.status === 200 });
}
