// The serial console service: the cloud decides whether a login prompt runs
// on the serial port, and at what speed. Installed on the device as
// /etc/chariotd/services/console.js; the getty's run script sources the
// outfile (`. /var/lib/chariotd/console.rc`) and the notify command
// restarts it.
//
//   shadow:  "console": { "enabled": true, "tty": "ttyS0", "baud": 115200 }
//   outfile: baud='115200'
//            enabled='true'
//            tty='ttyS0'
module.exports = {
  key: 'console',
  outfile: '/var/lib/chariotd/console.rc',
  outformat: 'SHELL',
  informat: 'SHELL',    // local updates may be written in the same form
  notifycmd: 'sv restart console-getty',
};
