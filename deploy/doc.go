// Package deploy holds no code: it is the home of the tests of herd's
// deployment files beside it (generate-envrc.sh, settings.sh, setup.sh,
// the compose files). See README.md.
package deploy
