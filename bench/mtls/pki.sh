#!/usr/bin/env bash
# A throwaway mesh PKI for the mTLS benchmark, made with openssl: an ECDSA P-256 root
# and two workload certificates with SPIFFE URI SANs (client: ns/bench/sa/client,
# server: ns/bench/sa/backend), as the mesh CA would issue them. Usage: pki.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
openssl ecparam -name prime256v1 -genkey -noout -out root.key 2>/dev/null
openssl req -x509 -new -key root.key -sha256 -days 30 -subj "/O=trellis bench mesh" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out root.pem 2>/dev/null
for who in client backend; do
  openssl ecparam -name prime256v1 -genkey -noout -out "$who.ec.key" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$who.ec.key" -out "$who.key"
  openssl req -new -key "$who.key" -subj "/" -out "$who.csr" 2>/dev/null
  cat > "$who.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=critical,URI:spiffe://cluster.local/ns/bench/sa/$who
EXT
  openssl x509 -req -in "$who.csr" -CA root.pem -CAkey root.key -CAcreateserial -days 30 \
    -sha256 -extfile "$who.ext" -out "$who.pem" 2>/dev/null
done
chmod 600 ./*.key
