package safety

import "github.com/hearth-energy/hearth"

// The point names as readings carry them, for building readings in tests.
var (
	PointSoC         = hearth.PointSoC.String()
	PointPower       = hearth.PointPower.String()
	PointCellVMin    = hearth.PointCellVMin.String()
	PointCellVMax    = hearth.PointCellVMax.String()
	PointTemp        = hearth.PointTemp.String()
	PointACPower     = hearth.PointACPower.String()
	PointBatteryV    = hearth.PointBatteryV.String()
	PointBatteryA    = hearth.PointBatteryA.String()
	PointCellTempMin = hearth.PointCellTempMin.String()
	PointCellTempMax = hearth.PointCellTempMax.String()
	PointChargeState = hearth.PointChargeState.String()
)
