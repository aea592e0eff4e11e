// Package k8se2e runs headcount's Kubernetes manifests and components
// against a real control plane (etcd, kube-apiserver,
// kube-controller-manager; no kubelet): server-side apply of every overlay,
// the scaler's pod deletion cost steering the ReplicaSet controller, and the
// HPA scaling on headcount-adapter's custom metric, and the real KEDA
// (operator, admission webhooks, metrics server) on the overlays'
// ScaledObject. Run it with `task e2e:k8s` (k8se2e/run.sh), which builds the
// control plane into .cache/k8s first; without it the tests skip and say
// why. KEDA's tests run once `task e2e:keda` has built KEDA into .cache/keda.
package k8se2e
