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
	"k8s.io/client-go/tools/cache"
)

// DefaultServiceLabel is the workload label naming its headcount service.
const DefaultServiceLabel = "headcount.dev/service"

// KubeCluster is the Cluster of a real API server, read from informer caches
// so that no metric request waits on the API server.
type KubeCluster struct {
	label     string
	pods      informers.SharedInformerFactory
	workloads informers.SharedInformerFactory
	synced    []cache.InformerSynced
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
	c := &KubeCluster{
		label: serviceLabel,
		pods: informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = podSelector })),
		workloads: informers.NewSharedInformerFactory(client, 0),
	}
	// Listers must be asked for before Start, so that Start runs them.
	c.synced = []cache.InformerSynced{
		c.pods.Core().V1().Pods().Informer().HasSynced,
		c.workloads.Apps().V1().Deployments().Informer().HasSynced,
		c.workloads.Apps().V1().StatefulSets().Informer().HasSynced,
	}
	return c, nil
}

// Start runs the caches until ctx ends.
func (c *KubeCluster) Start(ctx context.Context) {
	c.pods.Start(ctx.Done())
	c.workloads.Start(ctx.Done())
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

// PodLabels returns a pod's labels from the cache.
func (c *KubeCluster) PodLabels(namespace, name string) (labels.Set, bool) {
	pod, err := c.pods.Core().V1().Pods().Lister().Pods(namespace).Get(name)
	if err != nil {
		return nil, false
	}
	return pod.Labels, true
}

// Workloads lists the Deployments or StatefulSets of namespace matching selector.
func (c *KubeCluster) Workloads(gr schema.GroupResource, namespace string, selector labels.Selector) (map[string]string, error) {
	if err := c.Synced(); err != nil {
		return nil, err
	}
	out := map[string]string{}
	switch gr {
	case deployments:
		list, err := c.workloads.Apps().V1().Deployments().Lister().Deployments(namespace).List(selector)
		if err != nil {
			return nil, err
		}
		for _, d := range list {
			out[d.Name] = d.Labels[c.label]
		}
	case statefulsets:
		list, err := c.workloads.Apps().V1().StatefulSets().Lister().StatefulSets(namespace).List(selector)
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
		meta, err = c.workloads.Apps().V1().Deployments().Lister().Deployments(namespace).Get(name)
	case statefulsets:
		meta, err = c.workloads.Apps().V1().StatefulSets().Lister().StatefulSets(namespace).Get(name)
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
