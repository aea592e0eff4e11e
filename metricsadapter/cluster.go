package metricsadapter

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// DefaultServiceLabel is the workload label naming its headcount service.
const DefaultServiceLabel = "headcount.dev/service"

// KubeCluster is the Cluster of a real API server, read from informer caches
// so that no metric request waits on the API server.
type KubeCluster struct {
	label        string
	factories    []informers.SharedInformerFactory
	pods         corelisters.PodLister
	deployments  appslisters.DeploymentLister
	statefulsets appslisters.StatefulSetLister
	synced       []cache.InformerSynced
}

// NewKubeCluster caches client's pods (those matching podSelector, all when
// empty) and Deployments and StatefulSets; serviceLabel (default
// DefaultServiceLabel) names a workload's service. Start runs the caches.
func NewKubeCluster(client kubernetes.Interface, podSelector, serviceLabel string) (*KubeCluster, error) {
	if _, err := labels.Parse(podSelector); err != nil {
		return nil, fmt.Errorf("pod selector %q: %w", podSelector, err)
	}
	if serviceLabel == "" {
		serviceLabel = DefaultServiceLabel
	}
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = podSelector }))
	workloads := informers.NewSharedInformerFactory(client, 0)
	pods := podFactory.Core().V1().Pods()
	deployments, statefulsets := workloads.Apps().V1().Deployments(), workloads.Apps().V1().StatefulSets()
	// Informers must be asked for before Start, so that Start runs them.
	return &KubeCluster{
		label:        serviceLabel,
		factories:    []informers.SharedInformerFactory{podFactory, workloads},
		pods:         pods.Lister(),
		deployments:  deployments.Lister(),
		statefulsets: statefulsets.Lister(),
		synced:       []cache.InformerSynced{pods.Informer().HasSynced, deployments.Informer().HasSynced, statefulsets.Informer().HasSynced},
	}, nil
}

// Start runs the caches until ctx ends.
func (c *KubeCluster) Start(ctx context.Context) {
	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
}

// Synced is nil once every cache has its first full list.
func (c *KubeCluster) Synced() error {
	for _, ok := range c.synced {
		if !ok() {
			return errors.New("kubernetes caches not synced yet")
		}
	}
	return nil
}

// Pod returns a pod's labels and IPs from the cache.
func (c *KubeCluster) Pod(namespace, name string) (Pod, bool) {
	pod, err := c.pods.Pods(namespace).Get(name)
	if err != nil {
		return Pod{}, false
	}
	ips := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	return Pod{Labels: pod.Labels, IPs: ips}, true
}

// Workloads lists the Deployments or StatefulSets of namespace matching selector.
func (c *KubeCluster) Workloads(gr schema.GroupResource, namespace string, selector labels.Selector) (map[string]string, error) {
	if err := c.Synced(); err != nil {
		return nil, err
	}
	out := map[string]string{}
	switch gr {
	case deployments:
		list, err := c.deployments.Deployments(namespace).List(selector)
		if err != nil {
			return nil, err
		}
		for _, d := range list {
			out[d.Name] = d.Labels[c.label]
		}
	case statefulsets:
		list, err := c.statefulsets.StatefulSets(namespace).List(selector)
		if err != nil {
			return nil, err
		}
		for _, s := range list {
			out[s.Name] = s.Labels[c.label]
		}
	default:
		return nil, fmt.Errorf("%s is not a workload", gr)
	}
	return out, nil
}

// Workload returns the service one Deployment or StatefulSet maps to.
func (c *KubeCluster) Workload(gr schema.GroupResource, namespace, name string) (string, bool, error) {
	if err := c.Synced(); err != nil {
		return "", false, err
	}
	var (
		meta metav1.Object
		err  error
	)
	switch gr {
	case deployments:
		meta, err = c.deployments.Deployments(namespace).Get(name)
	case statefulsets:
		meta, err = c.statefulsets.StatefulSets(namespace).Get(name)
	default:
		return "", false, fmt.Errorf("%s is not a workload", gr)
	}
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return meta.GetLabels()[c.label], true, nil
}
