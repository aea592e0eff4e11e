// ramp.js: a load profile that makes `headcount up` scale out and back in.
// Creations arrive at a rate that ramps up to PEAK_RATE/s, stays, and falls
// to zero; each stream is held HOLD_MIN_MS (default 20 s, Pareto-skewed when
// HOLD_ALPHA > 0), so live instances climb to about PEAK_RATE × hold and the
// scaler adds followers; once the ramp ends the streams close and it removes
// them (watch `headcount status` or the `up` display during and after the run).
//
//   PEAK_RATE (4), RAMP (30s), PEAK (60s); with up's default target of 10 per
//   follower, 4/s held 20 s keeps ~80 instances live: ~8 followers
import { create, subscribe, target, lifetime } from './lib.js';

const peak = Number(__ENV.PEAK_RATE || 4);
const holdMin = 20000;

export const options = {
  scenarios: {
    ramp: {
      executor: 'ramping-arrival-rate',
      startRate: 0, timeUnit: '1s',
      preAllocatedVUs: 50, maxVUs: Number(__ENV.MAX_VUS || 2000),
      stages: [
        { target: peak, duration: __ENV.RAMP || '30s' },
        { target: peak, duration: __ENV.PEAK || '60s' },
        { target: 0, duration: __ENV.RAMP || '30s' },
      ],
      // Streams still held when the ramp ends finish their lifetime.
      gracefulStop: `${Math.ceil(Number(__ENV.HOLD_MAX_MS || __ENV.HOLD_MIN_MS || holdMin) / 1000) + 10}s`,
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    create_latency: [`p(99)<${__ENV.P99_CREATE_MS || 2000}`],
  },
};

export default function () {
  const t = target();
  const id = create(t.control);
  if (id) subscribe(t.streaming, id, lifetime(holdMin));
}
