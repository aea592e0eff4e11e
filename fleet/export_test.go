package fleet

// MalformedReports lets the NATS tests publish the same table of bad reports.
var MalformedReports = malformedReports
