// A small Skip service for headcount's end-to-end test: one input collection
// "posts" held by the leader, mirrored by every follower, and served to
// clients through the "posts" resource. Plain ESM so Node runs it as is.
//
// Environment:
//   SKIP_ROLE               leader | follower
//   SKIP_CONTROL_PORT       control API port
//   SKIP_STREAMING_PORT     streaming (SSE) API port
//   SKIP_LEADER_HOST        follower only: the leader's host (default 127.0.0.1)
//   SKIP_LEADER_CONTROL     follower only: the leader's control port
//   SKIP_LEADER_STREAMING   follower only: the leader's streaming port
//   SKIP_RESOURCE_PREFIX    read by @skipruntime/server itself: instance ids
//                           become <prefix>/<uuid>
import { runService } from "@skipruntime/server";
import { asLeader, asFollower, Sum } from "@skipruntime/helpers";

class PostsResource {
  instantiate(collections) {
    return collections.posts;
  }
}

// "scored": a mapper over every row of posts that depends on its params, as
// in issue #22's measurements: a follower builds one graph per distinct
// params (a definition), shared by every instance of it.
class Score {
  constructor(weight) {
    this.weight = weight;
  }
  mapEntry(key, values) {
    let sum = 0;
    for (const v of values.toArray()) sum += Number(v) || 0;
    return [[key, sum * this.weight]];
  }
}

class ScoredResource {
  constructor(params) {
    this.weight = Number(params?.weight ?? 1);
  }
  instantiate(collections) {
    return collections.posts.map(Score, this.weight);
  }
}

// "tallied": the same params-dependent mapper over every row of posts, its
// output summed into one entry: the graph is as large, but a stream carries
// one number where "scored" carries every row, so that a follower's memory
// and CPU are the graphs' more than the streams'.
class Total {
  constructor(weight) {
    this.weight = weight;
  }
  mapEntry(key, values) {
    let sum = 0;
    for (const v of values.toArray()) sum += Number(v) || 0;
    return [["total", sum * this.weight]];
  }
}

class TalliedResource {
  constructor(params) {
    this.weight = Number(params?.weight ?? 1);
  }
  instantiate(collections) {
    return collections.posts.map(Total, this.weight).reduce(Sum);
  }
}

const service = {
  initialData: { posts: [] },
  resources: { posts: PostsResource, scored: ScoredResource, tallied: TalliedResource },
  createGraph(inputs) {
    return { posts: inputs.posts };
  },
};

function port(name) {
  const v = Number.parseInt(process.env[name] ?? "", 10);
  if (!Number.isInteger(v) || v <= 0 || v > 65535) {
    console.error(`${name} must be a TCP port, got ${JSON.stringify(process.env[name])}`);
    process.exit(2);
  }
  return v;
}

const role = process.env.SKIP_ROLE;
let definition;
if (role === "leader") {
  definition = asLeader(service);
} else if (role === "follower") {
  definition = asFollower(service, {
    leader: {
      host: process.env.SKIP_LEADER_HOST ?? "127.0.0.1",
      control_port: port("SKIP_LEADER_CONTROL"),
      streaming_port: port("SKIP_LEADER_STREAMING"),
    },
    collections: ["posts"],
  });
} else {
  console.error(`SKIP_ROLE must be leader or follower, got ${JSON.stringify(role)}`);
  process.exit(2);
}

const server = await runService(definition, {
  control_port: port("SKIP_CONTROL_PORT"),
  streaming_port: port("SKIP_STREAMING_PORT"),
});

// SIGTERM (a drain's end) stops the service cleanly.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close().finally(() => process.exit(0));
  });
}
