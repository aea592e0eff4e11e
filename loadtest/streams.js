// streams.js: create an instance through the control listener, subscribe
// through the streaming listener, hold it for a drawn lifetime; measures
// creation latency (create_latency), creations/s (creations) and time to
// first event (sse_time_to_first_event).
//
//   MODE=closed  VUS looping as fast as they can (throughput)      [default]
//   MODE=rate    RATE creations/s with up to MAX_VUS (latency at a fixed load)
//   DURATION     e.g. 15s
//   HOLD_MIN_MS, HOLD_ALPHA, HOLD_MAX_MS: lifetime (see lib.js); 0 = close at the first event
import { create, subscribe, target, lifetime } from './lib.js';

const duration = __ENV.DURATION || '15s';
const scenario = (__ENV.MODE || 'closed') === 'rate'
  ? {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 100),
      timeUnit: '1s',
      duration,
      preAllocatedVUs: Number(__ENV.PRE_VUS || 50),
      maxVUs: Number(__ENV.MAX_VUS || 500),
    }
  : { executor: 'constant-vus', vus: Number(__ENV.VUS || 20), duration };

export const options = {
  scenarios: { streams: scenario },
  // A stream still held when the duration ends is cut, not awaited.
  thresholds: {
    checks: ['rate>0.99'],
    'http_req_failed{name:create}': ['rate<0.01'],
    create_latency: [`p(99)<${__ENV.P99_CREATE_MS || 500}`],
    sse_time_to_first_event: [`p(99)<${__ENV.P99_TTFE_MS || 1000}`],
  },
};

export default function () {
  const t = target();
  const id = create(t.control);
  if (id) subscribe(t.streaming, id, lifetime());
}
