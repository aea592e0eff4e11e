// Shared helpers of the headcount k6 scripts. Targets come from the
// environment so the same scenario runs direct, through the headcount
// router(s) or through HAProxy:
//   CONTROL    control base URL(s), comma-separated (creations, writes)
//   STREAMING  streaming base URL(s), same count as CONTROL
// VU n uses pair (n-1) mod count: with several router replicas each VU
// sticks to one, as a client behind a load balancer would.
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import sse from 'k6/x/sse';

const list = (v, def) => (v || def).split(',').map((s) => s.trim().replace(/\/$/, '')).filter(Boolean);
const controls = list(__ENV.CONTROL, 'http://127.0.0.1:8081');
const streamings = list(__ENV.STREAMING, 'http://127.0.0.1:8080');
if (controls.length !== streamings.length) {
  throw new Error(`CONTROL has ${controls.length} URLs, STREAMING ${streamings.length}: give them in pairs`);
}

export const collection = __ENV.COLLECTION || 'loadtest';

export function target() {
  const i = (__VU - 1) % controls.length;
  return { control: controls[i], streaming: streamings[i] };
}

export const creations = new Counter('creations');
export const createLatency = new Trend('create_latency', true);

// create makes a resource instance and returns its id, or '' on failure.
export function create(control) {
  const res = http.post(`${control}/v1/streams/collection`, JSON.stringify({ name: collection }), {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'create' },
  });
  const ok = check(res, { 'created (201)': (r) => r.status === 201 && r.body.length > 0 });
  if (!ok) return '';
  creations.add(1);
  createLatency.add(res.timings.duration);
  return res.body;
}

// subscribe holds the instance's stream for hold ms (0: until the first event).
export function subscribe(streaming, id, hold, extra) {
  const res = sse.open(`${streaming}/v1/streams/${id}`, Object.assign({ hold, tags: { name: 'stream' } }, extra));
  const ok = check(res, { 'stream opened (200)': (r) => r.status === 200 && r.events > 0 && r.error === '' });
  if (!ok) console.warn(`stream ${id}: status ${res.status}, ${res.events} events, ${res.error}`);
  return res;
}

// lifetime draws a stream lifetime in ms: HOLD_MIN_MS when HOLD_ALPHA is 0,
// else Pareto(HOLD_MIN_MS, HOLD_ALPHA) capped at HOLD_MAX_MS — a few long
// streams and many short ones, the skew that round robin cannot see.
export function lifetime(defaultMin = 0) {
  const min = Number(__ENV.HOLD_MIN_MS || defaultMin);
  const alpha = Number(__ENV.HOLD_ALPHA || 0);
  const max = Number(__ENV.HOLD_MAX_MS || 60000);
  if (alpha <= 0 || min <= 0) return min;
  return Math.min(max, min / Math.pow(1 - Math.random(), 1 / alpha));
}
