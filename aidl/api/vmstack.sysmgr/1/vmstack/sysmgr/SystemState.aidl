package vmstack.sysmgr;
parcelable SystemState {
  int state;
  String description;
  boolean ignitionOn;
  boolean vehicleInUse;
  long nowMs;
  long inputCount;
  vmstack.sysmgr.GuestState[] guests;
}
