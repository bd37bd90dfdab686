// Command probe is what the real-node tests run inside pods: one static binary in an
// image of its own, so the tests need no registry and no image with a shell.
//
//	probe sleep                 block until SIGTERM
//	probe serve ADDR            HTTP server answering with the pod's hostname
//	probe connect HOST:PORT     open a TCP connection (exit 1 with the error if refused)
//	probe get URL               HTTP(S) GET; for https, trust the service account CA and
//	                            send its token, as an in-cluster client does
//	probe whoami                who the API server says this pod's token is
//	probe resolve NAME          look NAME up with the pod's resolv.conf
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) < 2 {
		fail("usage: probe sleep|serve|connect|get|whoami|resolve ...")
	}
	switch os.Args[1] {
	case "sleep":
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("probe: sleeping")
		<-stop
	case "serve":
		host, _ := os.Hostname()
		fmt.Println("probe: serving on", arg(2))
		err := http.ListenAndServe(arg(2), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Printf("probe: %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
			fmt.Fprintln(w, host)
		}))
		fail(err.Error())
	case "connect":
		conn, err := net.DialTimeout("tcp", arg(2), 5*time.Second)
		if err != nil {
			fail(err.Error())
		}
		conn.Close()
		fmt.Println("connected")
	case "get":
		body := request("GET", arg(2), nil)
		fmt.Println(body)
	case "whoami":
		review := `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`
		body := request("POST", "https://kubernetes.default.svc/apis/authentication.k8s.io/v1/selfsubjectreviews", []byte(review))
		fmt.Println(body)
	case "resolve":
		addrs, err := net.LookupHost(arg(2))
		if err != nil {
			fail(err.Error())
		}
		fmt.Println(strings.Join(addrs, " "))
	default:
		fail("unknown command " + os.Args[1])
	}
}

func request(method, url string, payload []byte) string {
	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(method, url, bytes.NewReader(payload))
	if err != nil {
		fail(err.Error())
	}
	if strings.HasPrefix(url, "https://") {
		ca, err := os.ReadFile(serviceAccount + "/ca.crt")
		if err != nil {
			fail(err.Error())
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		token, err := os.ReadFile(serviceAccount + "/token")
		if err != nil {
			fail(err.Error())
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		fail(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		fail(fmt.Sprintf("%s: %s", resp.Status, body))
	}
	return string(body)
}

func arg(i int) string {
	if len(os.Args) <= i {
		fail("missing argument")
	}
	return os.Args[i]
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "probe:", message)
	os.Exit(1)
}
